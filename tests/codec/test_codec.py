"""The codec: every image back bit for bit, files that carry what must match, and one clear
error for every file or input it cannot take."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY as SUITE_TINY

from acn.codec import compress, container, decompress, encode, segments
from acn.codec import parts as parts_of
from acn.codec.bitsback import plan_growing
from acn.codec.files import as_images
from acn.config import load_config
from acn.data.info import DataInfo
from acn.errors import CodecError
from acn.model import ACN

# The suite's tiny networks, untrained: the codec must be exact whatever the weights.
TINY = [setting for setting in SUITE_TINY if setting.startswith("model.")]


def _model(kind: str, levels: int = 2, seed: int = 0, decoder: str = "pixelcnn") -> ACN:
    preset = {"acn": "digits-acn", "vae": "digits-vae", "pixelcnn": "digits-pixelcnn"}[kind]
    extra = [] if levels == 2 else ["model.likelihood=categorical"]
    config = load_config(preset, [*TINY, *extra, f"model.decoder={decoder}"])
    info = DataInfo("synthetic", (1, 5, 4), levels, 0)
    torch.manual_seed(seed)
    model = ACN(config, info, 40, generator=torch.Generator().manual_seed(seed))
    if model.bank is not None:  # codes spread like trained ones, so the grid has some width
        model.bank.update(
            torch.arange(40), torch.randn(40, 4, generator=torch.Generator().manual_seed(1)) * 2
        )
    return model.eval()


def _images(n: int, levels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, levels, size=(n, 1, 5, 4))
    if n >= 4:
        x[1] = x[0]  # a duplicate
        x[2] = 0  # all black
        x[3] = levels - 1  # all white
    return x


def _sorted(images: np.ndarray) -> list[bytes]:
    return sorted(im.tobytes() for im in np.asarray(images, np.uint8))


@pytest.mark.parametrize("kind", ["acn", "vae", "pixelcnn"])
@pytest.mark.parametrize("n", [1, 2, 7, 23])
def test_round_trip_gives_every_image_back(kind, n):
    model, x = _model(kind), _images(n, seed=n)
    encoded = encode(model, x, segments=3, seeds=2)
    back = decompress(model, encoded.data)
    # The ACN returns the set in tour order (and says which order), the others their own order.
    np.testing.assert_array_equal(back, x[encoded.order])
    assert _sorted(back) == _sorted(x)
    if kind != "acn":
        np.testing.assert_array_equal(encoded.order, np.arange(n))


@pytest.mark.parametrize("kind", ["acn", "vae"])
def test_categorical_pixels_and_the_deconv_decoder(kind):
    for levels, decoder in ((5, "pixelcnn"), (2, "deconv")):
        model, x = _model(kind, levels, decoder=decoder), _images(9, levels)
        np.testing.assert_array_equal(decompress(model, compress(model, x, keep_order=True)), x)


def test_keep_order_costs_about_log_n_factorial():
    model, x = _model("acn"), _images(23)
    plain, kept = encode(model, x), encode(model, x, keep_order=True)
    np.testing.assert_array_equal(decompress(model, kept.data), x)
    extra_bits = 8 * (len(kept.data) - len(plain.data))
    log2_factorial = sum(np.log2(np.arange(2, 24)))  # log2 23! = 74.1 bits
    assert abs(extra_bits - log2_factorial) < 40  # the rest is the other path's scatter


def test_seeds_keep_the_smallest_file_and_say_which():
    model, x = _model("acn"), _images(23)
    encoded = encode(model, x, seeds=4)
    assert len(encoded.sizes) == 4
    assert len(encoded.data) == min(encoded.sizes) == encoded.sizes[encoded.seed]


def test_the_header_is_a_few_bytes():
    model, x = _model("acn"), _images(23)
    # magic, flags, N, S, check byte: the defaults are not spelled out
    assert encode(model, x).header_bytes == 5
    assert encode(model, x, segments=3).header_bytes == 5  # format 4 always spells S
    assert encode(model, x, first_seed=3).header_bytes == 7  # + settings byte, seed


@pytest.mark.parametrize("version", [3, 4, 5])
def test_every_header_reads_back(version):
    rng = np.random.default_rng(3)
    soft = version == container.SOFT_VERSION  # format 5: exactly the soft-tour files
    most = container.MAX_SEGMENTS if version == 3 else container.MAX_SEGMENTS_4
    for _ in range(200):
        n = int(rng.choice([1, 7, 127, 128, 360, 20000, container.MAX_IMAGES]))
        header = container.Header(
            "acn" if soft else str(rng.choice(container.KINDS)),
            n,
            int(rng.choice([container.DEFAULT_DELTA_CODE, 0, 4])),
            bool(rng.integers(2)) and not soft,
            int(rng.choice([0, 1, 2, 4, 5, container.MAX_THREADS])),
            int(rng.choice([min(container.default_segments(n), most), 1, min(n, most)])),
            int(rng.choice([0, 1, 300, container.MAX_SEED])),
            soft,
            version,
        )
        fp = int(rng.integers(1 << 32))
        payload = b"\x01" * (n // 8 + 1)  # the fewest bytes that may hold n images
        read = container.parse(header.to_bytes(fp) + payload)
        assert read.header == header and read.payload == payload
        assert read.check == container.check_byte(read.fields, fp)
        assert len(read.fields) + 1 <= 16  # the longest header


def test_the_soft_tour_needs_an_acn_and_a_set():
    x = _images(5)
    with pytest.raises(ValueError, match="needs an ACN"):
        encode(_model("vae"), x, soft_tour=True)
    with pytest.raises(ValueError, match="keep_order"):
        encode(_model("acn"), x, soft_tour=True, keep_order=True)


def test_another_model_is_refused():
    x = _images(7)
    data = compress(_model("acn", seed=0), x)
    with pytest.raises(CodecError, match="another model"):
        decompress(_model("acn", seed=5), data)
    with pytest.raises(CodecError, match="made by a acn model"):
        decompress(_model("vae"), data)


def test_corrupted_truncated_and_foreign_files_are_refused():
    model, x = _model("acn"), _images(12)
    data = compress(model, x)
    bad = {
        "foreign": b"PK\x03\x04 not ours at all",
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "header only": data[:9],
        "one flipped bit": data[:-3] + bytes([data[-3] ^ 0x10]) + data[-2:],
        "version": data[:1] + bytes([0x80 | (data[1] & 0x3F)]) + data[2:],
    }
    for name, blob in bad.items():
        with pytest.raises(CodecError):
            decompress(model, blob)
            pytest.fail(f"{name} decoded")


def test_images_the_model_cannot_code_are_refused():
    model = _model("acn")
    for images, message in (
        (np.zeros((3, 1, 6, 4), int), "must be"),
        (np.full((3, 1, 5, 4), 2), "levels 0..1"),
        (np.full((3, 1, 5, 4), -1), "levels 0..1"),
        (np.full((3, 1, 5, 4), 0.5), "integer levels"),
        (np.zeros((0, 1, 5, 4), int), "must be"),
    ):
        with pytest.raises(CodecError, match=message):
            compress(model, images)
    # (N, H, W) is accepted for one channel
    x = _images(4)[:, 0]
    assert _sorted(decompress(model, compress(model, x))) == _sorted(x[:, None])


def test_images_stay_uint8_and_are_not_copied():
    model, x = _model("acn"), _images(7).astype(np.uint8)
    held = as_images(x, model)
    assert held.dtype == np.uint8 and np.shares_memory(held, x)  # a view, not a copy
    assert np.shares_memory(as_images(x[:, 0], model), x)  # (N, H, W) too
    wide = as_images(x.astype(np.int64), model)  # other integer types: one uint8 copy
    assert wide.dtype == np.uint8 and np.array_equal(wide, x)
    back = decompress(model, compress(model, x, keep_order=True))
    assert back.dtype == np.uint8 and np.array_equal(back, x)
    # (N, H, W) uint8 held as a view: the networks still see standard strides (a zero stride
    # on the channel once steered torch to other kernels, and the file did not decode)
    np.testing.assert_array_equal(decompress(model, compress(model, x[:, 0], keep_order=True)), x)
    strided = np.lib.stride_tricks.as_strided(x, x.shape, (20, 0, 4, 1))  # (N, 1, H, W) too
    np.testing.assert_array_equal(decompress(model, compress(model, strided, keep_order=True)), x)


def test_a_file_that_does_not_decode_is_never_returned(monkeypatch):
    from acn.codec import files

    model, x = _model("vae"), _images(5)
    real = files.decompress
    monkeypatch.setattr(files, "decompress", lambda m, d: real(m, d)[::-1].copy())
    with pytest.raises(CodecError, match="did not decode"):
        compress(model, x)


@pytest.mark.parametrize("soft", [False, True])
def test_random_damage_is_always_one_codec_error(soft):
    model, x = _model("acn"), _images(12)
    data = compress(model, x, soft_tour=soft, segments=2)
    rng = np.random.default_rng(0)
    for _ in range(40):
        blob = bytearray(data)
        position = int(rng.integers(len(blob)))
        blob[position] ^= int(rng.integers(1, 256))
        cut = int(rng.integers(len(blob) // 2, len(blob) + 1))
        with pytest.raises(CodecError):
            decompress(model, bytes(blob[:cut]))


def test_random_small_sets_round_trip_every_way():
    """A property test: random small sets (copies, all-black and all-white images among them)
    come back under every option."""
    rng = np.random.default_rng(11)
    model = _model("acn")
    for case in range(12):
        n = int(rng.integers(1, 13))
        x = rng.integers(0, 2, size=(n, 1, 5, 4))
        for i in range(n):  # each image may be replaced by a copy, all black or all white
            pick = rng.integers(4)
            if pick == 1 and i:
                x[i] = x[rng.integers(i)]
            elif pick == 2:
                x[i] = 0
            elif pick == 3:
                x[i] = 1
        options = [
            {},
            {"keep_order": True},
            {"soft_tour": True, "segments": int(rng.integers(1, 4))},
            {"segments": int(rng.integers(1, 4)), "seeds": 2},
        ][case % 4]
        encoded = encode(model, x, **options)
        back = decompress(model, encoded.data)
        want = x if options.get("keep_order") else x[encoded.order]
        np.testing.assert_array_equal(back, want, err_msg=f"case {case}: {options}")
        assert _sorted(back) == _sorted(x)


@pytest.mark.parametrize("name", ["acn", "acn-kept", "vae", "pixelcnn"])
def test_files_of_format_3_still_decode(name):
    """Exact files written by format 3's code (its staircase of segments, S in the extension;
    tests/codec/data, made from these models and images), read by this one."""
    kind = name.split("-")[0]
    data = (Path(__file__).parent / "data" / f"format3-{name}.acnz").read_bytes()
    assert data[0] == container.MAGIC_3 and container.parse(data).header.version == 3
    x = _images(23, seed=5)
    back = decompress(_model(kind), data)
    if name == "acn":
        assert _sorted(back) == _sorted(x)
    else:  # kept order, or a model coded in order
        assert np.array_equal(back, x)


def test_the_default_segments_keep_the_heads_within_their_share():
    """An ACN takes as many segments as keep the segment heads' extra bits (their KL and a bit
    a dimension for joining) and a second part's, where it has one, within 0.2% of the file; a
    VAE or PixelCNN, whose segments cost nothing, the most a batch should hold."""
    model, x = _model("acn"), _images(400, seed=2)
    many = np.repeat(x, 50, axis=0)  # 20,000 images: a budget of hundreds of bits
    for images in (x, many):
        order = np.arange(len(images))
        costs = segments.estimate_costs(model, images, order)
        chosen = segments.layout_by_bits(model, images, order)
        budget = segments.SHARE * costs["image_bits"] * len(images)
        assert chosen.parts == (1 if images is x else 2)  # 400 tiny images: one part
        left = budget - (chosen.parts - 1) * segments.PART_BITS
        per_segment = costs["head_bits"] + segments.JOIN_BITS_PER_DIM * model.code_dim
        assert chosen.segments == max(chosen.parts, int(left // per_segment))
        assert costs["head_bits"] > 0 and costs["image_bits"] > 5  # 20 pixels, a 4-d latent
    assert chosen.segments > 10  # the large set's budget pays for many
    made = encode(model, x)  # the encoder's default (along its tour), and its plan
    header = container.parse(made.data).header
    assert made.plan == plan_growing(len(x), header.segments) and header.parts == 1
    for kind in ("vae", "pixelcnn"):
        layout = segments.layout_by_bits(_model(kind), x, np.arange(len(x)))
        assert layout == (len(x), 1)
        assert segments.layout_by_bits(_model(kind), np.repeat(x, 3, 0), None).segments == (
            segments.MOST_BY_DEFAULT
        )


@pytest.mark.parametrize(
    "kind, options",
    [
        ("acn", {}),
        ("acn", {"keep_order": True}),
        ("acn", {"soft_tour": True}),
        ("acn", {"exact": True}),
        ("vae", {}),
        ("pixelcnn", {"exact": True}),
    ],
)
@pytest.mark.parametrize("parts", [2, 3])
def test_parts_are_stacks_of_their_own(kind, options, parts):
    """A file of several parts: each part's stack is the whole of its bytes (the header says
    where it ends), and together they give the images back as a one-part file does."""
    model, x = _model(kind), _images(41, seed=parts)
    made = encode(model, x, segments=5, parts=parts, **options)
    header = container.parse(made.data).header
    assert header.parts == len(made.plans) == parts and header.segments == 5
    assert [sum(plan.lengths) for plan in made.plans] == parts_of.split(41, parts)
    back = decompress(model, made.data, workers=1)
    if kind == "acn" and not options.get("keep_order"):
        assert _sorted(back) == _sorted(x) and np.array_equal(back, x[made.order])
    else:
        assert np.array_equal(back, x)
    # a part's bytes moved into its neighbour: the lengths are covered by the check byte
    moved = replace(header, part_bytes=(header.part_bytes[0] + 1, *header.part_bytes[1:]))
    body = made.data[made.header_bytes :]
    with pytest.raises(CodecError, match="header does not match|does not decode"):
        decompress(
            model, moved.fields() + made.data[made.header_bytes - 1 : made.header_bytes] + body
        )


def test_parts_decode_in_processes_of_their_own():
    """Two parts, two processes (spawned: a fresh interpreter gets the model pickled): the
    same images as one process, and a worker's failure is one CodecError. An exact file: its
    bits are the same in any process (a float file's only where the floats are)."""
    model, x = _model("acn"), _images(30, seed=4)
    data = compress(model, x, segments=4, parts=2, exact=True)
    assert np.array_equal(decompress(model, data, workers=2), decompress(model, data, workers=1))
    damaged = bytearray(data)
    damaged[-1] ^= 0x5A  # the last part's top word: decoded in the worker
    with pytest.raises(CodecError):
        decompress(model, bytes(damaged), workers=2)


def test_the_default_parts_follow_the_files_bits():
    model = _model("acn")
    small, large = _images(40, seed=1), _images(4000, seed=1)
    assert segments.layout_by_bits(model, small, np.arange(40)).parts == 1
    assert segments.layout_by_bits(model, large, np.arange(4000)).parts == segments.DEFAULT_PARTS
    # parts asked for are made, whatever segment count the bits alone would give
    assert container.parse(compress(model, small, parts=2)).header.parts == 2
    with pytest.raises(ValueError, match="parts must be in 1..64"):
        encode(model, small, parts=65)
