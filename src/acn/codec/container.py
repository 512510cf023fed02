"""The ``.acnz`` file: a header of a few bytes, then the ANS stack.

At N = 360 digits one percent of the file is about 12 bytes, so the header holds only what the
decoder needs before it starts (all multi-byte numbers are LEB128 varints)::

    byte 0      0xAC, the magic
    byte 1      format version (high nibble) | delta code k, delta = 2^(-k/2) (low nibble)
    byte 2      model kind (bits 0-1: 0 pixelcnn, 1 vae, 2 acn) | keep order (bit 2)
                | torch threads - 1 (bits 3-7)
    varints     N images, segments, dither seed (segment s is GAP images shorter than s - 1)
    byte        one byte of the fingerprint: another model is refused before decoding starts
    rest        the ANS stack's words, little-endian, the top word's zero bytes dropped

What must match but is only needed at the end lies at the *bottom* of the stack, pushed first by
the encoder and popped last by the decoder: the 32-bit fingerprint of the model's weights and
code bank and of the library versions that affect the floats, and a CRC-32 of the decoded images.
There these bits also pay for the encoder's first pops, which would otherwise find an empty
stack and receive nothing (codec notes: start-up).
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
FORMAT_VERSION = 1
KINDS = ("pixelcnn", "vae", "acn")
# Segment s is this many images shorter than segment s - 1 (part of the format: not in the header).
GAP = 1
MAX_THREADS = 32


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

    @property
    def delta(self) -> float:
        return delta_of(self.delta_code)

    def to_bytes(self) -> bytes:
        flags = KINDS.index(self.kind) | (int(self.keep_order) << 2) | ((self.threads - 1) << 3)
        head = bytes([MAGIC, (FORMAT_VERSION << 4) | self.delta_code, flags])
        numbers = b"".join(_varint(v) for v in (self.images, self.segments, self.seed))
        return head + numbers + bytes([self.fingerprint & 0xFF])


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
    if len(data) < 7 or data[0] != MAGIC:
        raise CodecError("not an acn compressed file (no 0xAC magic byte)")
    version, code = data[1] >> 4, data[1] & 0x0F
    if version != FORMAT_VERSION:
        raise CodecError(f"file format version {version}; this acn reads version {FORMAT_VERSION}")
    flags = data[2]
    if flags & 0b11 >= len(KINDS):
        raise CodecError("corrupted file: unknown model kind in the header")
    pos, numbers = 3, []
    for _ in range(3):
        value, pos = _read_varint(data, pos)
        numbers.append(value)
    if pos >= len(data):
        raise CodecError("truncated file: the header is incomplete")
    images, segments, seed = numbers
    if images < 1 or segments < 1 or segments > images:
        raise CodecError("corrupted file: impossible image or segment count in the header")
    header = Header(
        KINDS[flags & 0b11],
        images,
        code,
        bool(flags & 0b100),
        (flags >> 3) + 1,
        segments,
        seed,
        data[pos],
    )
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


def images_crc(images: np.ndarray) -> int:
    """CRC-32 of the images' levels (N, C, H, W), as bytes in the order given."""
    return zlib.crc32(np.ascontiguousarray(images, dtype=np.uint16).tobytes())


def push_check(stack: Stack, fp: int, crc: int) -> None:
    """The bottom of the stack: fingerprint and CRC as four 16-bit uniform symbols."""
    words = [fp >> 16, fp & 0xFFFF, crc >> 16, crc & 0xFFFF]
    stack.push_uniform(np.array(words), np.full(4, 1 << 16))


def pop_check(stack: Stack) -> tuple[int, int]:
    w = [int(v) for v in stack.pop_uniform(np.full(4, 1 << 16))]
    return (w[0] << 16) | w[1], (w[2] << 16) | w[3]


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
