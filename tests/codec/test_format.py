"""A format that cannot hang or lie: every header number within its limit, N within what the
file's length allows, a damaged or crafted header refused at once with one CodecError, blank
sets padded rather than refused, and a fingerprint that changes with the float stack."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_codec import _images, _model

from acn.codec import compress, container, decompress, encode, files, fingerprint
from acn.codec.ans import Stack
from acn.codec.bitsback import max_segments, plan_growing
from acn.errors import CodecError

MAGIC = bytes([container.MAGIC])
MAGIC_3 = bytes([container.MAGIC_3])
# The time a refusal may take: it parses a few bytes and hashes the tiny model (milliseconds),
# or decodes a handful of 5x4 images; the margin is for a loaded machine.
AT_ONCE = 1.0


def _refused(model, blob: bytes, match: str | None = None) -> str:
    start = time.perf_counter()
    with pytest.raises(CodecError, match=match) as error:
        decompress(model, blob)
    assert time.perf_counter() - start < AT_ONCE, blob[:20]
    return str(error.value)


def _flags(kind: str = "acn", extended: bool = False, threads: int = 1, version: int = 4) -> int:
    return (
        (container.VERSION_BITS[version] << 6)
        | (container.KINDS.index(kind) << 4)
        | (int(extended) << 2)
        | (threads - 1)
    )


def _settings(header: container.Header) -> bytes:
    return bytes([header.version, header.delta_code, header.threads])


def _signed(model, fields: bytes, header: container.Header) -> bytes:
    """``fields`` and the check byte this model gives them: a crafted header, not a damaged one."""
    fp = fingerprint.fingerprint(model, _settings(header))
    return fields + bytes([container.check_byte(fields, fp)])


@pytest.fixture(scope="module")
def small():
    """A real small file of the tiny untrained ACN, with a seed and segments in its header."""
    model, x = _model("acn"), _images(7)
    encoded = encode(model, x, segments=2, first_seed=300)
    return model, encoded.data, encoded.header_bytes


def test_the_limits_fit_each_other_and_the_coder():
    assert max_segments(container.MAX_IMAGES, container.GAP) == container.MAX_SEGMENTS
    limits = (
        container.MAX_IMAGES,
        container.MAX_SEED,
        container.MAX_SEGMENTS,
        container.MAX_SEGMENTS_4,
    )
    assert [len(container._varint(v)) for v in limits] == [4, 5, 2, 2]
    assert len(plan_growing(container.MAX_IMAGES, container.MAX_SEGMENTS_4).lengths) == (
        container.MAX_SEGMENTS_4
    )
    # keep order: the Lehmer code's first digit is uniform over N values, the most the coder's
    # uniform symbols hold
    stack = Stack()
    stack.push_uniform(np.array([container.MAX_IMAGES - 1]), np.array([container.MAX_IMAGES]))
    assert Stack(stack.to_bytes()).pop_uniform(np.array([container.MAX_IMAGES]))[0] == (
        container.MAX_IMAGES - 1
    )
    too_many = np.broadcast_to(np.zeros((1, 1, 5, 4), np.uint8), (2**24 + 1, 1, 5, 4))  # no memory
    with pytest.raises(CodecError, match="at most 16777216 images"):
        compress(_model("acn"), too_many)


def test_huge_and_past_the_limit_numbers_are_refused_at_once(small):
    model, data, size = small
    payload = data[size:]
    ext = bytes([container.DEFAULT_DELTA_CODE | 0x10])  # a seed follows
    raw = {  # (header bytes before the check byte, what the error says)
        "N 2^34": (bytes([_flags()]) + container._varint(2**34), "runs past 4 bytes"),
        "N 2^63": (bytes([_flags()]) + container._varint(2**63), "runs past 4 bytes"),
        "N past its limit": (bytes([_flags()]) + container._varint(2**24 + 1), "above 16777216"),
        "N at its limit": (bytes([_flags()]) + container._varint(2**24) + b"\x01", "hold at most"),
        "N zero": (bytes([_flags(), 0, 1]), "impossible"),
        "N in too many bytes": (bytes([_flags(), 0x87, 0x00, 1]), "needless zero"),
        "S zero": (bytes([_flags(), 7, 0]), "impossible"),
        "S above N": (bytes([_flags(), 7, 8]), "impossible"),
        "S past its limit": (bytes([_flags(), 7]) + container._varint(8192), "above 8191"),
        "S 2^40": (bytes([_flags(), 7]) + container._varint(2**40), "runs past 2 bytes"),
        # bit 5 of the extension: parts follow, P and the lengths of all but the last
        "one part": (bytes([_flags(extended=True), 7, 2, 1 | 0x20, 1]), "part count 1 is below"),
        "P past its limit": (bytes([_flags(extended=True), 7, 2, 1 | 0x20, 65]), "above 64"),
        "an empty part": (bytes([_flags(extended=True), 7, 2, 1 | 0x20, 2, 0]), "empty part"),
        "more parts than segments": (
            bytes([_flags(extended=True), 7, 2, 1 | 0x20, 3, 1, 1]),
            "3 parts of 2 segments",
        ),
        "parts past the end": (
            bytes([_flags(extended=True), 7, 2, 1 | 0x20, 2]) + container._varint(10_000),
            "10000 bytes before the last",
        ),
        "a part 2^40 long": (
            bytes([_flags(extended=True), 7, 2, 1 | 0x20, 2]) + container._varint(2**40),
            "part length runs past 5 bytes",
        ),
        "seed past its limit": (
            bytes([_flags(extended=True), 7, 2]) + ext + container._varint(2**32),
            "above 4294967295",
        ),
        "seed 2^63": (
            bytes([_flags(extended=True), 7, 2]) + ext + container._varint(2**63),
            "past",
        ),
    }
    for name, (fields, match) in raw.items():
        assert "\n" not in _refused(model, MAGIC + fields + b"\x00" + payload, match), name
        _refused(model, MAGIC + fields)  # the file ends inside or right after the header
    _refused(model, MAGIC + bytes([_flags(), 0x87]), "truncated")  # N cut short
    _refused(model, MAGIC + bytes([_flags(), 7, 0x81]), "truncated")  # S cut short
    _refused(model, MAGIC + bytes([_flags(extended=True), 7, 2]), "truncated")  # no extension
    _refused(model, MAGIC + bytes([_flags(extended=True), 7, 2]) + ext + b"\xff\xff", "truncated")
    # format 3's numbers, read as they were
    for fields, match in (
        (bytes([_flags(version=3)]) + container._varint(2**34), "runs past 4 bytes"),
        (bytes([_flags(version=3), 0]), "impossible"),
        (bytes([_flags(extended=True, version=3), 7]) + ext + container._varint(2**32), "above"),
    ):
        _refused(model, MAGIC_3 + fields + b"\x00" + payload, match)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"segments": container.MAX_SEGMENTS_4}, "impossible"),  # at its limit, above N
        ({"segments": 6}, "does not fit"),  # 6 segments join over 4 steps: 7 + 3 + 1 > 7
        ({"segments": 4, "version": 3}, "does not fit"),  # format 3: 1 + 2 + 3 + 4 > 7 images
        # read, decoded and refused at the end (or where the decode runs off its tables)
        ({"threads": container.MAX_THREADS}, None),  # at its limit
        ({"seed": container.MAX_SEED}, None),
        ({"images": 8}, None),
        ({"keep_order": True}, None),
        ({"delta_code": 15}, None),
    ],
)
def test_crafted_headers_with_their_check_byte_give_one_error(small, change, match):
    """Headers whose check byte is right (crafted, not damaged): at their limits they are read,
    decoded and refused at the end; past them, refused at once."""
    model, data, size = small
    header = container.parse(data).header
    crafted = container.Header(**{**header.__dict__, **change})
    _refused(model, _signed(model, crafted.fields(), crafted) + data[size:], match)


def test_numbers_past_their_limits_are_refused_even_with_their_check_byte(small):
    model, data, size = small
    ext = bytes([container.DEFAULT_DELTA_CODE | 0x40])  # a thread count follows
    for segments, threads, match in (
        (container.MAX_SEGMENTS_4 + 1, 1, "segment count 8192 is above 8191"),
        (2**40, 1, "segment count runs past 2 bytes"),
        (2, container.MAX_THREADS + 1, "thread count 33 is above 32"),
        # 0 threads marks the exact path, whose fingerprint this float signature is not
        (2, 0, "does not match"),
    ):
        fields = MAGIC + bytes([_flags(extended=True), 7]) + container._varint(segments)
        fields += ext + container._varint(threads)
        header = container.Header("acn", 7, 1, False, max(threads, 1), 2, 0)
        _refused(model, _signed(model, fields, header) + data[size:], match)
    ext = bytes([container.DEFAULT_DELTA_CODE | 0x20])  # format 3: a segment count follows
    fields = MAGIC_3 + bytes([_flags(extended=True, version=3), 7]) + ext
    header = container.Header("acn", 7, 1, False, 1, 2, 0, version=3)
    blob = _signed(model, fields + container._varint(container.MAX_SEGMENTS + 1), header)
    _refused(model, blob + data[size:], "segment count 5793 is above 5792")


def test_a_part_too_short_for_its_images_is_refused_at_once():
    """Each part's stack holds a bit an image (padded where shorter), as the whole file does:
    a header that gives one part almost nothing is refused before decoding."""
    model, x = _model("acn"), _images(40)
    data = compress(model, x, segments=4, parts=2)
    parsed = container.parse(data)
    header = parsed.header
    for first in (1, len(parsed.payload) - 1):  # part 0 starved, then part 1
        crafted = replace(header, part_bytes=(first,))
        fields = crafted.fields()
        fp = fingerprint.fingerprint(model, _settings(crafted))
        blob = fields + bytes([container.check_byte(fields, fp)]) + parsed.payload
        _refused(model, blob, "a part of 20 images in")


def test_a_damaged_header_is_refused_before_any_decoding(small, monkeypatch):
    """Every bit of the header flipped, and random bytes: one CodecError at once. CRC-8 catches
    every damaged byte unless it moves the header's end (a varint's continuation bit); only
    those may reach the decoder, which then fails on the check bits."""
    model, data, size = small
    started = []
    real = files.decode_steps

    def spy(*args, **kwargs):
        started.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(files, "decode_steps", spy)
    rng = np.random.default_rng(0)
    for position in range(size):
        masks = [1 << bit for bit in range(8)] + rng.integers(1, 256, size=8).tolist()
        for mask in masks:
            blob = bytearray(data)
            blob[position] ^= mask
            started.clear()
            _refused(model, bytes(blob))
            if started:  # the damage moved the header's end
                assert len(container.parse(bytes(blob)).fields) != size - 1, (position, mask)


def test_files_of_format_2_are_refused_by_their_version(small):
    model, data, _ = small
    for magic in (MAGIC, MAGIC_3):
        old = magic + bytes([(2 << 6) | (data[1] & 0x3F)]) + data[2:]
        message = _refused(model, old, "file format version 2")
        assert "reads formats 3, 4 and 5 only" in message


@pytest.mark.parametrize("kind", ["vae", "pixelcnn"])
def test_blank_sets_are_padded_never_refused(kind):
    """A model sure of black codes a blank set in almost no bits (bits back gives the latents'
    bits back): the stack is padded up to a bit an image, and the file decodes."""
    model = _model(kind, decoder="deconv" if kind == "vae" else "pixelcnn")
    with torch.no_grad():
        model.decoder.head[-1].weight.zero_()
        model.decoder.head[-1].bias.fill_(-30.0)  # P(white) rounds to the coder's floor
        if model.encoder is not None:
            model.encoder.head.weight.zero_()  # every code 0: the posterior is the prior
            model.encoder.head.bias.zero_()
    n = 120
    x = np.zeros((n, 1, 5, 4), np.uint8)
    one = encode(model, x[:1])
    assert len(one.data) - one.header_bytes <= 5  # the check bits and a little
    encoded = encode(model, x, segments=6)
    payload = len(encoded.data) - encoded.header_bytes
    assert n <= 8 * payload <= n + 64  # padded to the floor, a few symbols' rounding above
    np.testing.assert_array_equal(decompress(model, encoded.data), x)
    bottom = encoded.header_bytes  # the stack's first byte: the padding's
    for position in (bottom, len(encoded.data) - 1):  # the padding is checked, as is the top
        damaged = bytearray(encoded.data)
        damaged[position] ^= 1
        _refused(model, bytes(damaged))


def test_the_fingerprint_changes_with_the_float_stack(monkeypatch):
    model = _model("acn")
    base = fingerprint.fingerprint(model, b"s")
    assert fingerprint.fingerprint(model, b"s") == base
    assert fingerprint.fingerprint(model, b"t") != base  # the codec's settings
    changes = {
        "instruction set": (torch.backends.cpu, "get_cpu_capability", lambda: "AVX2"),
        "code": (fingerprint, "code_digest", lambda: "edited"),
        "scipy": (fingerprint.scipy, "__version__", "0.0"),
        "numpy": (fingerprint.np, "__version__", "0.0"),
        "constriction": (fingerprint, "coder_version", lambda: "0.0"),
        "numpy simd": (fingerprint, "_numpy_simd", lambda: "SSE2"),
    }
    for name, (owner, attribute, value) in changes.items():
        with monkeypatch.context() as patch:
            patch.setattr(owner, attribute, value)
            assert fingerprint.fingerprint(model, b"s") != base, name
    precision = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert fingerprint.fingerprint(model, b"s") != base
    finally:
        torch.set_float32_matmul_precision(precision)
    devices = (
        fingerprint.float_stack(torch.device("cpu")),
        fingerprint.float_stack(torch.device("meta")),
    )
    assert devices[0] != devices[1]
    assert fingerprint.code_digest() == fingerprint.code_digest.__wrapped__()


def test_another_float_stack_is_refused_and_says_what_may_differ(monkeypatch):
    model, x = _model("vae"), _images(6)
    data = compress(model, x)
    parsed = container.parse(data)
    mine = fingerprint.fingerprint(model, _settings(parsed.header))
    for capability in ("AVX2", "DEFAULT", "VSX", "ZVECTOR"):  # one whose low byte differs
        with monkeypatch.context() as patch:
            patch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
            fp = fingerprint.fingerprint(model, _settings(parsed.header))
        if (fp ^ mine) & 0xFF:
            break
    with monkeypatch.context() as patch:  # another machine: refused at the header
        patch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        message = _refused(model, data, "header does not match this model")
        assert "CPU instruction set" in message and "floats are reproduced" in message
        # one whose fingerprint shares the check byte (1 in 256) decodes, and fails at the end
        shared = parsed.fields + bytes([container.check_byte(parsed.fields, fp)])
        message = _refused(model, shared + parsed.payload, "does not decode correctly")
        assert "another model" in message and "CPU instruction set" in message
    np.testing.assert_array_equal(decompress(model, data), x)
