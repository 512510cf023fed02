"""The ``.acnz`` file: a header of a few bytes, then the ANS stack.

At N = 360 digits one percent of the file is about 10 bytes, so the header holds only what the
decoder needs before it starts, and nothing a default already says (multi-byte numbers are
LEB128 varints, each with a limit and so a most bytes)::

    byte 0      the magic: 0xAD (formats 4 and 5), 0xAC (format 3, still read)
    byte 1      format version (bits 6-7: 3 in format 3, 0 in format 4, 1 in format 5)
                | model kind (bits 4-5: 0 pixelcnn, 1 vae, 2 acn)
                | keep order (bit 3) | extended (bit 2) | torch threads - 1 (bits 0-1)
                (a thread count of 0, in the extension: the exact path, whose bits no thread
                count decides: :mod:`acn.codec.exact`)
    varint      N images, 1 .. MAX_IMAGES (at most 4 bytes)
    varint      formats 4 and 5: the segment count S, 1 .. min(N, MAX_SEGMENTS_4)
    extension   only where bit 2 is set: one byte, delta code k (bits 0-3, delta = 2^(-k/2))
                | a seed follows (bit 4) | a segment count follows (bit 5) | a thread count
                follows (bit 6) | soft tour (bit 7), then those varints in that order
    byte        the check byte: CRC-8 of the bytes above XOR the fingerprint's low byte
    rest        the ANS stack's words, little-endian, the top word's zero bytes dropped

Format 4 differs from format 3 in its magic, in spelling S after N, and in one rule: its
segments join the encoder as fast as the stack can feed them
(:func:`acn.codec.bitsback.plan_growing`) where format 3's joined one a step
(:func:`acn.codec.bitsback.plan_segments`), so a file may have up to :data:`MAX_SEGMENTS_4` of
them and the encoder chooses their number by bits (:mod:`acn.codec.segments`): a number no
default could say.

Format 5 is format 4 with the soft tour of :mod:`acn.codec.softtour` (its near candidates,
escape and dithered choices): a file has it exactly when its soft tour bit is set, and the
encoder writes format 4 otherwise. Format 3 and 4 files with that bit set, whose whole-set soft
tour format 5 replaced, are refused with a message (they were float files only, which decode only
where their floats are reproduced anyway).

Without the extension a file has the default bin width (:data:`DEFAULT_DELTA_CODE`), dither
seed 0, :func:`default_segments` segments (format 3) and 1 to 4 threads: five bytes for N < 128
and S < 128, six for N < 16,384 (format 3: one fewer).

**The check byte** is the header's checksum and the model's fingerprint in one byte, so that a
damaged header and another model (or another float stack) are both refused before decoding
starts, for no byte more than format 2 spent on the fingerprint alone (each byte is 0.1% of a
360-digit file). CRC-8 catches every error within 8 consecutive bits: one damaged byte is
always caught unless it moves the header's end (a varint's continuation bit), which is caught
with probability 255/256; the rest, like a model that shares the byte, fail at the end of the
decode on the check bits, which cover the header too. The one byte cannot say which of the two
went wrong.

What must match but is only needed at the end lies at the *bottom* of the stack, pushed first by
the encoder and popped last by the decoder: 32 check bits, the CRC-32 of the decoded images
XOR the CRC-32 of the header XOR the model's 32-bit fingerprint (:mod:`acn.codec.fingerprint`).
These bits also feed the encoder's first pops, which would otherwise find an empty stack (codec
notes: start-up). Below them lies padding, where a stack would hold fewer than
:data:`MIN_BITS_PER_IMAGE` bits per image: that floor is what lets a decoder refuse a header's
N from the file's length alone (:func:`parse`).
"""

from __future__ import annotations

import bisect
import zlib
from dataclasses import dataclass

import numpy as np

from acn.codec.ans import Stack
from acn.errors import CodecError

# Format 3's magic and version (bits 6-7 of byte 1, whose last value it is); formats 4 and 5
# share a magic of their own, with 0 and 1 there.
MAGIC_3, MAGIC = 0xAC, 0xAD
FORMAT_VERSION = 4  # a file without a soft tour
SOFT_VERSION = 5  # a file with one: format 4's layout and format 5's soft tour
VERSION_BITS = {3: 3, 4: 0, 5: 1}
KINDS = ("pixelcnn", "vae", "acn")
# Segment s is this many images shorter than segment s - 1 (part of the format: not in the header).
GAP = 1
# The header's limits: a varint longer than its limit needs is refused, and so is a value
# above it. N: the order's Lehmer code (keep order) draws its first digit uniformly from N values,
# and the coder's uniform symbols have at most 2^24 values (its 24-bit precision); 16.7 M
# images, 13 GB of 28x28 digits, is also far past what one file should hold.
MAX_IMAGES = 1 << 24
# Segment s is GAP images shorter than segment s - 1, so S segments need S (S + 1) / 2 images:
# 5,792 is the most that MAX_IMAGES allow (bitsback.max_segments; a test checks).
MAX_SEGMENTS = 5792
# Format 4: the decoder holds one step of every segment at once (a batch of S images in the
# PixelCNN's caches), so S is capped where that batch still fits a laptop's memory.
MAX_SEGMENTS_4 = 8191
MAX_SEED = (1 << 32) - 1
# Format 4's parts, independent stacks decoded side by side (one process each): a few per core.
MAX_PARTS = 64
MAX_PART_BYTES = (1 << 35) - 1  # 32 GB: past any file of 2^24 images

MAX_THREADS = 32
# The least a stack holds per image, in bits. Bits back can make an image cost nothing or less
# (a latent popped from a wide posterior gives back more than its push under a sharp prior
# took), so no per-image floor follows from the coding itself; a blank set under a confident
# model codes to almost nothing. The format makes one: the encoder pads the bottom of a stack
# shorter than N bits (:func:`push_pad`), and a decoder refuses an N above 8 bits per byte of
# stack at once, so a header cannot make it decode far more images than its bytes could
# hold. Real images cost tens of bits (digits 23); only sets of near-blank copies ever pad,
# and pay at most this bit per image.
MIN_BITS_PER_IMAGE = 1
PAD = 0xAC  # the padding symbol, uniform over 16 bits (a 0 would add no bits to an empty stack)
# The defaults a header without its extension stands for. Part of the format: changing one
# changes how existing files decode.
DEFAULT_DELTA_CODE = 1  # delta = 2^-0.5, chosen by measurement (docs/codec.md)
IMAGES_PER_SEGMENT = 180  # the default segment count's images per segment (docs/codec.md)


def version_of(soft_tour: bool) -> int:
    """The format a new file is written in: 5 with a soft tour, else 4."""
    return SOFT_VERSION if soft_tour else FORMAT_VERSION


def default_segments(images: int) -> int:
    """The segment count a file has unless its header says otherwise."""
    return max(1, round(images / IMAGES_PER_SEGMENT))


@dataclass(frozen=True)
class Header:
    """What a file's header says; ``version`` is the format (3 or 4), which decides the magic
    and the segment rule."""

    kind: str
    images: int
    delta_code: int
    keep_order: bool
    threads: int
    segments: int
    seed: int
    soft_tour: bool = False
    version: int = FORMAT_VERSION
    # Format 4: the byte lengths of every part's stack but the last (no parts: one stack).
    part_bytes: tuple[int, ...] = ()

    @property
    def parts(self) -> int:
        """Independent stacks, decoded side by side (:mod:`acn.codec.parts`)."""
        return len(self.part_bytes) + 1

    @property
    def delta(self) -> float:
        return delta_of(self.delta_code)

    @property
    def exact(self) -> bool:
        """Made by the exact path (:mod:`acn.codec.exact`): thread count 0."""
        return self.threads == 0

    def fields(self, lengths: bool = True) -> bytes:
        """The header's bytes before its check byte; without the parts' lengths, what the check
        bits cover (they are pushed before the lengths are known)."""
        spelt = self.version >= FORMAT_VERSION  # formats 4 and 5 always spell S, after N
        if spelt:  # bit 5: the parts follow, P then the lengths of all but the last
            shown = self.part_bytes if lengths else ()
            parts = (self.parts > 1, _varint(self.parts) + b"".join(map(_varint, shown)))
        else:  # format 3's bit 5: a segment count other than the default
            parts = (self.segments != default_segments(self.images), _varint(self.segments))
        follow = [
            (self.seed != 0, _varint(self.seed)),
            parts,
            (not 1 <= self.threads <= 4, _varint(self.threads)),
        ]
        extended = (
            self.delta_code != DEFAULT_DELTA_CODE
            or self.soft_tour
            or any(flag for flag, _ in follow)
        )
        flags = (
            (VERSION_BITS[self.version] << 6)
            | (KINDS.index(self.kind) << 4)
            | (int(self.keep_order) << 3)
            | (int(extended) << 2)
            | (min(self.threads, 4) - 1 if not follow[2][0] else 0)
        )
        magic = MAGIC if self.version >= FORMAT_VERSION else MAGIC_3
        out = bytes([magic, flags]) + _varint(self.images)
        if spelt:
            out += _varint(self.segments)
        if extended:
            bits = self.delta_code | (int(self.soft_tour) << 7)
            for i, (flag, _) in enumerate(follow):
                bits |= int(flag) << (4 + i)
            out += bytes([bits]) + b"".join(spelling for flag, spelling in follow if flag)
        return out

    def to_bytes(self, fingerprint: int) -> bytes:
        """The whole header: :meth:`fields` and the check byte of ``fingerprint``."""
        fields = self.fields()
        return fields + bytes([check_byte(fields, fingerprint)])


@dataclass(frozen=True)
class Parsed:
    """A file cut into its parts: the header, its bytes before the check byte, the check byte
    and the stack's bytes."""

    header: Header
    fields: bytes
    check: int
    payload: bytes


def delta_of(code: int) -> float:
    return 2.0 ** (-code / 2)


def delta_code(delta: float) -> int:
    """The header's code of a bin width: delta must be 2^(-k/2) for k in 0..15."""
    for k in range(16):
        if abs(delta_of(k) - delta) <= 1e-12 * delta:
            return k
    widths = ", ".join(f"{delta_of(k):g}" for k in range(0, 16, 2))
    raise ValueError(f"delta must be a power of sqrt(1/2) (e.g. {widths}), got {delta}")


def crc8(data: bytes) -> int:
    """CRC-8 (polynomial x^8 + x^2 + x + 1, 0x07): catches every error within 8 consecutive
    bits, so every single damaged byte."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def check_byte(fields: bytes, fingerprint: int) -> int:
    """The header's last byte: CRC-8 of ``fields`` XOR the fingerprint's low byte."""
    return crc8(fields) ^ (fingerprint & 0xFF)


def parse(data: bytes) -> Parsed:
    """Cut a file into its parts, or refuse it with a CodecError naming what is wrong: every
    number within its limit, and N within what the stack's length allows. Reads at most 16
    bytes and 5 more per part, and does no work that a header's numbers choose."""
    if len(data) < 2 or data[0] not in (MAGIC, MAGIC_3):
        raise CodecError("not an acn compressed file (no 0xAD or 0xAC magic byte)")
    flags = data[1]
    versions = (FORMAT_VERSION, SOFT_VERSION) if data[0] == MAGIC else (3,)
    format_version = next((v for v in versions if VERSION_BITS[v] == flags >> 6), None)
    if format_version is None:
        raise CodecError(
            f"file format version {flags >> 6} under the 0x{data[0]:X} magic; this acn reads "
            "formats 3, 4 and 5 only (files of other versions need the acn that wrote them)"
        )
    if (flags >> 4) & 0b11 >= len(KINDS):
        raise CodecError("corrupted file: unknown model kind in the header")
    images, pos = _read_varint(data, 2, MAX_IMAGES, "image count")
    if format_version >= FORMAT_VERSION:
        segments, pos = _read_varint(data, pos, MAX_SEGMENTS_4, "segment count")
    else:
        segments = default_segments(images)
    read = {"code": DEFAULT_DELTA_CODE, "seed": 0, "threads": (flags & 0b11) + 1}
    read |= {"soft": False, "part_bytes": (), "segments": segments}
    if flags & 0b100:
        pos = _read_extension(data, pos, format_version, read)
    code, seed, threads, soft = read["code"], read["seed"], read["threads"], read["soft"]
    part_bytes, segments = read["part_bytes"], read["segments"]
    check = _byte(data, pos)
    if images < 1 or not 1 <= segments <= images:
        raise CodecError("corrupted file: impossible image, segment or thread count in the header")
    kind = KINDS[(flags >> 4) & 0b11]
    _check_soft(soft, kind, format_version)
    payload = data[pos + 1 :]
    if len(part_bytes) + 1 > segments or sum(part_bytes) >= len(payload):
        raise CodecError(
            f"corrupted or truncated file: {len(part_bytes) + 1} parts of {segments} segments "
            f"and {sum(part_bytes)} bytes before the last, in {len(payload)} bytes"
        )
    if images * MIN_BITS_PER_IMAGE > 8 * len(payload):
        raise CodecError(
            f"corrupted or truncated file: its header says {images} images, and its "
            f"{len(payload)} bytes of data hold at most {8 * len(payload) // MIN_BITS_PER_IMAGE}"
        )
    header = Header(
        kind,
        images,
        code,
        bool(flags & 0b1000),
        threads,
        segments,
        seed,
        soft,
        format_version,
        part_bytes,
    )
    return Parsed(header, data[:pos], check, payload)


def _check_soft(soft: bool, kind: str, version: int) -> None:
    """A soft tour only in an ACN's file, and exactly in format 5's."""
    if soft and kind != "acn":
        raise CodecError("corrupted file: a soft tour in a file of a model without a tour")
    if soft and version != SOFT_VERSION:
        raise CodecError(
            f"a format {version} file with the whole-set soft tour, which format 5's near soft "
            "tour replaced: decode it with the acn that wrote it, or compress the images again"
        )
    if version == SOFT_VERSION and not soft:
        raise CodecError("corrupted file: a format 5 file without its soft tour")


def _read_extension(data: bytes, pos: int, version: int, read: dict) -> int:
    """The extension's settings into ``read``; returns the position after them."""
    bits = _byte(data, pos)
    pos += 1
    read["code"], read["soft"] = bits & 0x0F, bool(bits & 0x80)
    if bits & 0x10:
        read["seed"], pos = _read_varint(data, pos, MAX_SEED, "seed")
    if bits & 0x20 and version >= FORMAT_VERSION:
        read["part_bytes"], pos = _read_parts(data, pos)
    elif bits & 0x20:
        read["segments"], pos = _read_varint(data, pos, MAX_SEGMENTS, "segment count")
    if bits & 0x40:
        read["threads"], pos = _read_varint(data, pos, MAX_THREADS, "thread count")
    return pos


def _read_parts(data: bytes, pos: int) -> tuple[tuple[int, ...], int]:
    """Format 4's parts: P in 2 .. MAX_PARTS, then the byte lengths of all but the last."""
    parts, pos = _read_varint(data, pos, MAX_PARTS, "part count")
    if parts < 2:
        raise CodecError(f"corrupted file: the header's part count {parts} is below 2")
    lengths = []
    for _ in range(parts - 1):
        length, pos = _read_varint(data, pos, MAX_PART_BYTES, "part length")
        if length == 0:
            raise CodecError("corrupted file: an empty part in the header")
        lengths.append(length)
    return tuple(lengths), pos


def _byte(data: bytes, pos: int) -> int:
    if pos >= len(data):
        raise CodecError("truncated file: the header is incomplete")
    return data[pos]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int, limit: int, what: str) -> tuple[int, int]:
    """A varint of at most ``limit``: no more bytes than the limit needs, none of them a
    needless high zero (every number has one spelling), and no value above the limit."""
    most = -(-limit.bit_length() // 7)
    value = 0
    for i in range(most):
        byte = _byte(data, pos + i)
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i:
                raise CodecError(f"corrupted file: the header's {what} has a needless zero byte")
            if value > limit:
                raise CodecError(f"corrupted file: the header's {what} {value} is above {limit}")
            return value, pos + i + 1
    raise CodecError(f"corrupted file: the header's {what} runs past {most} bytes")


def images_crc(images: np.ndarray, as_set: bool = False) -> int:
    """CRC-32 of the images' uint8 levels (N, C, H, W), in the order given, or in byte order
    for a file that codes a set (its order is the coder's choice)."""
    rows = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    if not as_set:
        return zlib.crc32(rows)
    crc = 0
    for key in sorted(row.tobytes() for row in rows):
        crc = zlib.crc32(key, crc)
    return crc


def check_bits(fp: int, crc: int, fields: bytes) -> int:
    """The 32 check bits at the bottom of the stack: the images' CRC XOR the header's XOR the
    model's fingerprint."""
    return (fp ^ crc ^ zlib.crc32(fields)) & 0xFFFFFFFF


def pad_symbols(payload_bytes: int, images: int) -> int:
    """Padding symbols that bring a stack of ``payload_bytes`` up to MIN_BITS_PER_IMAGE bits an
    image (0 for any real set): each adds 16 bits, the first fewer, so one more."""
    short = images * MIN_BITS_PER_IMAGE - 8 * payload_bytes
    return 0 if short <= 0 else -(-short // 16) + 1


def push_pad(stack: Stack, count: int) -> None:
    """The very bottom of the stack, below the check bits: ``count`` padding symbols."""
    if count:
        stack.push_uniform(np.full(count, PAD), np.full(count, 1 << 16))


def pop_pad(stack: Stack) -> bool:
    """Pop the padding, the last thing on the stack: whether all that was left was padding.
    At most one pop per 16 bits the stack holds, whatever the bits."""
    for _ in range(stack.bits // 16 + 2):
        if stack.is_empty():
            return True
        if int(stack.pop_uniform(np.array([1 << 16]))[0]) != PAD:
            return False
    return stack.is_empty()


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
