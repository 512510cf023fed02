"""8-bit pixels of the discretised logistic mixture on the stack: every image back bit for bit,
tables that are the likelihood's own conditionals, and a cost of -log2 r(x|z)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import TINY as SUITE_TINY

from acn.codec import compress, decompress, encode
from acn.codec.ans import Stack
from acn.codec.pixels import LogisticMixturePixels, pixel_coder
from acn.config import load_config
from acn.data.info import DataInfo
from acn.model import ACN
from acn.nn.logistic import DiscretizedLogisticMixture

# The suite's tiny networks, untrained: the codec must be exact whatever the weights.
TINY = [setting for setting in SUITE_TINY if setting.startswith("model.")]
LOGISTIC = ["model.likelihood=logistic_mixture", "model.likelihood_components=3"]
SHAPES = {1: (1, 5, 4), 3: (3, 4, 4)}


def _model(kind: str, channels: int, decoder: str = "pixelcnn") -> ACN:
    preset = {"acn": "digits-acn", "vae": "digits-vae", "pixelcnn": "digits-pixelcnn"}[kind]
    config = load_config(preset, [*TINY, *LOGISTIC, f"model.decoder={decoder}"])
    info = DataInfo("synthetic", SHAPES[channels], 256, 0)
    torch.manual_seed(0)
    model = ACN(config, info, 40, generator=torch.Generator().manual_seed(0))
    if model.bank is not None:  # codes spread like trained ones, so the grid has some width
        model.bank.update(
            torch.arange(40), torch.randn(40, 4, generator=torch.Generator().manual_seed(1)) * 2
        )
    return model.eval()


def _images(n: int, channels: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).integers(0, 256, size=(n, *SHAPES[channels]))
    x[1] = 0  # all black
    x[2] = 255  # all white
    x[3] = x[0]  # a duplicate
    return x


def _sorted(images: np.ndarray) -> list[bytes]:
    return sorted(im.tobytes() for im in np.asarray(images, np.uint8))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", ["acn", "vae", "pixelcnn"])
def test_round_trip_gives_every_8_bit_image_back(kind, channels):
    model, x = _model(kind, channels), _images(11, channels, seed=channels)
    encoded = encode(model, x, segments=3)
    back = decompress(model, encoded.data)
    np.testing.assert_array_equal(back, x[encoded.order])
    assert _sorted(back) == _sorted(x)


def test_the_deconv_decoder_codes_its_pixels_from_one_pass():
    model, x = _model("acn", 3, decoder="deconv"), _images(9, 3)
    np.testing.assert_array_equal(decompress(model, compress(model, x, keep_order=True)), x)


def _coder(channels: int, components: int = 4) -> LogisticMixturePixels:
    coder = pixel_coder(DiscretizedLogisticMixture(256, components), channels)
    assert isinstance(coder, LogisticMixturePixels)
    return coder


def _params(coder: LogisticMixturePixels, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal decoder outputs (B, P, ...): means around [-1, 1], scales from a few
    bins to a few times the range, so float32 log_prob is accurate to far below 1e-4."""
    P = coder.likelihood.num_params(coder.channels)
    return torch.randn(shape[0], P, *shape[1:], generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("channels", [1, 3])
def test_the_tables_are_the_likelihoods_conditionals(channels):
    coder = _coder(channels)
    B = 500
    params = _params(coder, (B,), seed=channels)
    x = np.random.default_rng(channels).integers(0, 256, size=(B, channels))
    x[:50] = 0  # the edge bins, which stretch to -inf and +inf
    x[50:100] = 255
    symbols, tables = coder.pixel_rows(params, x)
    assert tables.shape == (B * channels, 256) and np.isfinite(tables).all()
    np.testing.assert_allclose(tables.sum(axis=1), 1.0, atol=1e-12)
    picked = np.log(tables[np.arange(len(symbols)), symbols]).reshape(channels, B).sum(axis=0)
    expected = coder.likelihood.log_prob(
        params[:, :, None, None], torch.from_numpy(x)[..., None, None]
    )
    gap = np.abs(picked - expected.double().numpy())
    print(f"C={channels}: max |sum log table - log_prob| = {gap.max():.2e} nats")
    assert gap.max() < 1e-4


def test_out_of_range_parameters_still_give_tables_and_round_trips():
    coder = _coder(3)
    params = _params(coder, (6, 2, 2), seed=7) * 300  # scales from the clamp to exp(-300)
    params[0] = float("nan")
    params[1, :, 0, 0] = float("inf")
    x = torch.from_numpy(np.random.default_rng(7).integers(0, 256, size=(6, 3, 2, 2)))
    with np.errstate(invalid="ignore"):  # NaN in, NaN on the way (then a uniform table)
        symbols, tables = coder.pixel_rows(params[:, :, 0, 0], x[:, :, 0, 0].numpy())
        assert np.isfinite(tables).all() and (tables >= 0).all()
        np.testing.assert_allclose(tables.sum(axis=1), 1.0, atol=1e-12)
        _assert_stack_round_trip(coder, params, x)


def _assert_stack_round_trip(coder, params, x) -> Stack:
    stack = Stack()
    coder.push_image(stack, params, x)
    bits = stack.bits
    _, _, H, W = x.shape
    for row in range(H):
        for col in range(W):
            pixel = coder.pop_pixel(stack, params[:, :, row : row + 1, col : col + 1])
            np.testing.assert_array_equal(pixel.numpy(), x[:, :, row, col].numpy())
    assert stack.is_empty()
    return bits


@pytest.mark.parametrize("channels", [1, 3])
def test_pushed_bits_are_minus_log2_of_the_likelihood(channels):
    coder = _coder(channels)
    B, H, W = 8, 4, 4
    params = _params(coder, (B, H, W), seed=10 + channels)
    x = coder.likelihood.sample(params, torch.Generator().manual_seed(channels))
    bits = _assert_stack_round_trip(coder, params, x)
    ideal = -coder.likelihood.log_prob(params, x).double().sum().item() / math.log(2)
    print(f"C={channels}: pushed {bits} bits, -log2 r(x) = {ideal:.1f} bits ({B} images)")
    # The stack's head word (measured: 12-22 bits at any batch size) and the 24-bit
    # quantisation (far below a bit per image).
    assert abs(bits - ideal) < 32 + B
