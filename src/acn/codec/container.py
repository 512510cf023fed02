"""The ``.acnz`` file: a header of a few bytes, then the ANS stack.

At N = 360 digits one percent of the file is about 10 bytes, so the header holds only what the
decoder needs before it starts, and nothing a default already says (multi-byte numbers are
LEB128 varints)::

    byte 0      0xAC, the magic
    byte 1      format version (bits 6-7) | model kind (bits 4-5: 0 pixelcnn, 1 vae, 2 acn)
                | keep order (bit 3) | extended (bit 2) | torch threads - 1 (bits 0-1)
    varint      N images
    extension   only where bit 2 is set: one byte, delta code k (bits 0-3, delta = 2^(-k/2))
                | a seed follows (bit 4) | a segment count follows (bit 5) | a thread count
                follows (bit 6) | soft tour (bit 7), then those varints in that order
    byte        one byte of the fingerprint: another model is refused before decoding starts
    rest        the ANS stack's words, little-endian, the top word's zero bytes dropped

Without the extension a file has the default bin width (:data:`DEFAULT_DELTA_CODE`), dither
seed 0, :func:`default_segments` segments and 1 to 4 threads: four bytes for N < 128, five
for N < 16,384.

What must match but is only needed at the end lies at the *bottom* of the stack, pushed first by
the encoder and popped last by the decoder: 32 check bits, the CRC-32 of the decoded images
XOR the 32-bit fingerprint of the model's weights and code bank, of the library versions that
affect the floats and of the codec's settings. A wrong model that shares the header's byte, a
corrupted stack or other floats all end there in one error. These bits also feed the encoder's
first pops, which would otherwise find an empty stack (codec notes: start-up).
"""

from __future__ import annotations

import bisect
import hashlib
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from acn.codec.ans import Stack, coder_version
from acn.errors import CodecError
from acn.version import __version__

MAGIC = 0xAC
FORMAT_VERSION = 2
KINDS = ("pixelcnn", "vae", "acn")
# Segment s is this many images shorter than segment s - 1 (part of the format: not in the header).
GAP = 1
MAX_THREADS = 32
# The defaults a header without its extension stands for. Part of the format: changing one
# changes how existing files decode.
DEFAULT_DELTA_CODE = 1  # delta = 2^-0.5, chosen by measurement (docs/codec.md)
IMAGES_PER_SEGMENT = 180  # the default segment count's images per segment (docs/codec.md)


def default_segments(images: int) -> int:
    """The segment count a file has unless its header says otherwise."""
    return max(1, round(images / IMAGES_PER_SEGMENT))


@dataclass(frozen=True)
class Header:
    kind: str
    images: int
    delta_code: int
    keep_order: bool
    threads: int
    segments: int
    seed: int
    fingerprint: int  # the full 32 bits; the header carries its low byte
    soft_tour: bool = False

    @property
    def delta(self) -> float:
        return delta_of(self.delta_code)

    def to_bytes(self) -> bytes:
        follow = [
            (self.seed != 0, self.seed),
            (self.segments != default_segments(self.images), self.segments),
            (self.threads > 4, self.threads),
        ]
        extended = (
            self.delta_code != DEFAULT_DELTA_CODE
            or self.soft_tour
            or any(flag for flag, _ in follow)
        )
        flags = (
            (FORMAT_VERSION << 6)
            | (KINDS.index(self.kind) << 4)
            | (int(self.keep_order) << 3)
            | (int(extended) << 2)
            | (min(self.threads, 4) - 1 if not follow[2][0] else 0)
        )
        out = bytes([MAGIC, flags]) + _varint(self.images)
        if extended:
            bits = self.delta_code | (int(self.soft_tour) << 7)
            for i, (flag, _) in enumerate(follow):
                bits |= int(flag) << (4 + i)
            out += bytes([bits]) + b"".join(_varint(v) for flag, v in follow if flag)
        return out + bytes([self.fingerprint & 0xFF])


def delta_of(code: int) -> float:
    return 2.0 ** (-code / 2)


def delta_code(delta: float) -> int:
    """The header's code of a bin width: delta must be 2^(-k/2) for k in 0..15."""
    for k in range(16):
        if abs(delta_of(k) - delta) <= 1e-12 * delta:
            return k
    widths = ", ".join(f"{delta_of(k):g}" for k in range(0, 16, 2))
    raise ValueError(f"delta must be a power of sqrt(1/2) (e.g. {widths}), got {delta}")


def parse(data: bytes) -> tuple[Header, bytes]:
    """The header and the stack's bytes of a file, or a CodecError naming what is wrong."""
    if len(data) < 4 or data[0] != MAGIC:
        raise CodecError("not an acn compressed file (no 0xAC magic byte)")
    flags = data[1]
    version = flags >> 6
    if version != FORMAT_VERSION:
        raise CodecError(f"file format version {version}; this acn reads version {FORMAT_VERSION}")
    if (flags >> 4) & 0b11 >= len(KINDS):
        raise CodecError("corrupted file: unknown model kind in the header")
    images, pos = _read_varint(data, 2)
    code, seed, threads, soft = DEFAULT_DELTA_CODE, 0, (flags & 0b11) + 1, False
    segments = default_segments(images)
    if flags & 0b100:
        if pos >= len(data):
            raise CodecError("truncated file: the header is incomplete")
        bits = data[pos]
        pos += 1
        code, soft = bits & 0x0F, bool(bits & 0x80)
        if bits & 0x10:
            seed, pos = _read_varint(data, pos)
        if bits & 0x20:
            segments, pos = _read_varint(data, pos)
        if bits & 0x40:
            threads, pos = _read_varint(data, pos)
    if pos >= len(data):
        raise CodecError("truncated file: the header is incomplete")
    if images < 1 or segments < 1 or segments > images or not 1 <= threads <= MAX_THREADS:
        raise CodecError("corrupted file: impossible image, segment or thread count in the header")
    kind = KINDS[(flags >> 4) & 0b11]
    if soft and kind != "acn":
        raise CodecError("corrupted file: a soft tour in a file of a model without a tour")
    keep = bool(flags & 0b1000)
    header = Header(kind, images, code, keep, threads, segments, seed, data[pos], soft)
    return header, data[pos + 1 :]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 35:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos
    raise CodecError("truncated or corrupted file: a header number does not end")


def fingerprint(model: torch.nn.Module, settings: bytes) -> int:
    """32 bits of a SHA-256 over every tensor of the model (weights and buffers: the code bank
    too), the versions that change its floats (torch, numpy, constriction, acn) and the codec's
    own settings."""
    h = hashlib.sha256()
    versions = (torch.__version__, np.__version__, coder_version(), __version__)
    h.update(repr(versions).encode() + settings)
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return int.from_bytes(h.digest()[:4], "little")


def images_crc(images: np.ndarray, as_set: bool = False) -> int:
    """CRC-32 of the images' levels (N, C, H, W), as bytes in the order given, or in byte order
    for a file that codes a set (its order is the coder's choice)."""
    rows = np.asarray(images).reshape(len(images), -1)
    order = range(len(rows))
    if as_set:  # byte order of the uint8 rows: the same as of their uint16 bytes
        keys = [row.tobytes() for row in rows]
        order = sorted(order, key=keys.__getitem__)
    crc = 0
    for i in order:  # row by row: no copy of the set
        crc = zlib.crc32(rows[i].astype("<u2").tobytes(), crc)
    return crc


def check_bits(fp: int, crc: int) -> int:
    """The 32 check bits at the bottom of the stack: images CRC XOR model fingerprint."""
    return (fp ^ crc) & 0xFFFFFFFF


def push_check(stack: Stack, check: int) -> None:
    """The bottom of the stack: the check bits as two 16-bit uniform symbols."""
    stack.push_uniform(np.array([check >> 16, check & 0xFFFF]), np.full(2, 1 << 16))


def pop_check(stack: Stack) -> int:
    high, low = (int(v) for v in stack.pop_uniform(np.full(2, 1 << 16)))
    return (high << 16) | low


def push_order(stack: Stack, order: np.ndarray) -> None:
    """The permutation ``order`` (tour position -> original row) as a Lehmer code: the i-th
    digit is order[i]'s rank among the rows not yet placed, uniform over N - i values, so the
    order costs exactly log N! nats."""
    remaining = list(range(len(order)))
    digits = []
    for row in order.tolist():
        i = bisect.bisect_left(remaining, row)  # its rank among the rows left
        digits.append(i)
        remaining.pop(i)
    sizes = np.arange(len(order), 0, -1)
    wide = sizes > 1
    stack.push_uniform(np.array(digits)[wide], sizes[wide])


def pop_order(stack: Stack, n: int) -> np.ndarray:
    sizes = np.arange(n, 0, -1)
    digits = np.zeros(n, dtype=np.int64)
    digits[sizes > 1] = stack.pop_uniform(sizes[sizes > 1])
    remaining = list(range(n))
    return np.array([remaining.pop(int(d)) for d in digits], dtype=np.int64)
