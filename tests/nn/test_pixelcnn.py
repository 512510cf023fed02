"""Tests for the gated PixelCNN (causality, no blind spot, z use, sampling) and the other
decoder / encoder shapes."""

from __future__ import annotations

import pytest
import torch

from acn.nn.build import make_likelihood
from acn.nn.decoder import DeconvDecoder, LatentMap
from acn.nn.encoder import Encoder
from acn.nn.gated import shift_down, shift_right
from acn.nn.pixelcnn import GatedPixelCNN, receptive_field, sees_whole_image

SHAPES = [(1, 8, 8), (1, 7, 5)]
KERNELS = [3, 5]
CODE_DIMS = [4, 0]


def _decoder(
    image_shape, code_dim, kernel, levels=2, layers=None, channels=8, seed=0, first_kernel=None
):
    torch.manual_seed(seed)
    _, H, W = image_shape
    if layers is None:
        # Enough layers for the receptive field to cover every earlier pixel.
        layers = max(H, W)
    return GatedPixelCNN(
        make_likelihood("auto", levels),
        image_shape,
        code_dim,
        channels=channels,
        layers=layers,
        kernel=kernel,
        map_channels=4,
        stages=2,
        first_kernel=first_kernel,
    )


def _latent(batch, code_dim, seed=1):
    if not code_dim:
        return None
    return torch.randn(batch, code_dim, generator=torch.Generator().manual_seed(seed))


def _dependence(dec, z, monkeypatch):
    """dep[i, j, k, l]: output pixel (i, j) (any channel) has a non-zero gradient w.r.t. input
    pixel (k, l) (any channel), for the first image of a batch of two; also returns the total
    gradient magnitude that crosses between the two images."""
    C, H, W = dec.image_shape
    g = torch.Generator().manual_seed(2)
    xf = torch.randn(2, C, H, W, generator=g).requires_grad_(True)
    x_int = torch.zeros(2, C, H, W, dtype=torch.long)
    # Feed a float tensor in place of the image's network input: the real params() path.
    monkeypatch.setattr(dec, "_inputs", lambda x: xf)
    out = dec.params(x_int, z)  # (2, P, H, W)
    # Random positive channel weights: a zero weighted sum means every channel's gradient is 0.
    w = torch.rand(out.shape[1], generator=g) + 0.5
    dep = torch.zeros(H, W, H, W, dtype=torch.bool)
    cross = 0.0
    for i in range(H):
        for j in range(W):
            (grad,) = torch.autograd.grad((out[0, :, i, j] * w).sum(), xf, retain_graph=True)
            dep[i, j] = grad[0].abs().sum(dim=0) > 0
            cross += grad[1].abs().sum().item()
    return dep, cross


def _strictly_before(H, W):
    """before[i, j, k, l] = raster position (k, l) < (i, j)."""
    pos = torch.arange(H * W).view(H, W)
    return pos[None, None, :, :] < pos[:, :, None, None]


@pytest.mark.parametrize("shape", SHAPES + [(3, 4, 4)])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("code_dim", CODE_DIMS)
def test_causal_and_no_blind_spot_by_gradient(shape, kernel, code_dim, monkeypatch):
    dec = _decoder(shape, code_dim, kernel, levels=2 if shape[0] == 1 else 4)
    dep, cross = _dependence(dec, _latent(2, code_dim), monkeypatch)
    _, H, W = shape
    before = _strictly_before(H, W)
    # Causal: no output depends on its own pixel or any later one (exactly zero gradient).
    leaks = (dep & ~before).nonzero().tolist()
    assert not leaks, f"outputs depending on current/later pixels: {leaks[:5]}"
    # No blind spot: every output depends on every earlier pixel.
    missing = (before & ~dep).nonzero().tolist()
    assert not missing, f"earlier pixels not seen: {missing[:5]}"
    # Explicitly the classic blind-spot victims.
    for i in range(1, H):
        for j in range(W):
            assert dep[i, j, 0, W - 1]
            if j + 1 < W:
                assert dep[i, j, i - 1, j + 1]
            if j:
                assert dep[i, j, i, j - 1]
    # Images in a batch do not see each other.
    assert cross == 0


@pytest.mark.parametrize("kernel", KERNELS)
def test_too_few_layers_limit_receptive_field(kernel, monkeypatch):
    """Sanity check of the gradient probe itself: a 1-layer network cannot see far pixels."""
    dec = _decoder((1, 8, 8), 0, kernel, layers=1)
    dep, _ = _dependence(dec, None, monkeypatch)
    assert not dep[7, 7, 0, 0]
    assert dep[7, 7, 7, 6]  # but it does see its left neighbour
    assert dep[7, 7, 6, 7]  # and the pixel above
    assert not (dep & ~_strictly_before(8, 8)).any()


@pytest.mark.parametrize(
    ("layers", "kernel", "first"), [(1, 3, None), (2, 3, 7), (3, 5, 3), (2, 3, 11), (3, 3, 9)]
)
def test_receptive_field_is_what_the_gradient_sees(layers, kernel, first, monkeypatch):
    """receptive_field() against the gradient probe on a 12x12 image: the deepest row above and
    the farthest columns each side (and left in the row) the bottom-middle pixel depends on;
    sees_whole_image() exactly when no earlier pixel is missed."""
    H = W = 12
    dec = _decoder((1, H, W), 0, kernel, layers=layers, first_kernel=first)
    dep, _ = _dependence(dec, None, monkeypatch)
    rows, columns = receptive_field(dec.kernels)
    i, j = H - 1, W // 2
    seen = dep[i, j].nonzero().tolist()  # [row, column] pairs
    above = [col for row, col in seen if row < i]
    left = [col for row, col in seen if row == i]
    assert min(row for row, _ in seen) == max(i - rows, 0)
    assert min(above) == max(j - columns, 0) and max(above) == min(j + columns, W - 1)
    assert min(left) == max(j - columns - 1, 0)
    missing = (_strictly_before(H, W) & ~dep).any().item()
    assert sees_whole_image(dec.kernels, H, W) == (not missing)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("code_dim", CODE_DIMS)
def test_causal_by_perturbation(shape, kernel, code_dim):
    levels = 4
    dec = _decoder(shape, code_dim, kernel, levels=levels, layers=4)
    C, H, W = shape
    g = torch.Generator().manual_seed(3)
    base = torch.randint(0, levels, (1, C, H, W), generator=g)
    # One image per pixel, that pixel changed; the unchanged image first.
    images = [base[0]]
    for i in range(H):
        for j in range(W):
            x = base[0].clone()
            x[:, i, j] = (x[:, i, j] + 1 + torch.randint(0, levels - 1, (C,), generator=g)) % levels
            images.append(x)
    batch = torch.stack(images)
    z = _latent(1, code_dim)
    z = z.expand(batch.shape[0], code_dim) if z is not None else None
    with torch.no_grad():
        out = dec.params(batch, z)  # (1 + H*W, C*P, H, W)
    ref = out[0]
    flat_ref = ref.flatten(1)  # (C*P, H*W)
    for p in range(H * W):
        changed = out[1 + p].flatten(1)
        # Params of every pixel at or before the changed one are unchanged.
        torch.testing.assert_close(changed[:, : p + 1], flat_ref[:, : p + 1], rtol=0, atol=1e-6)
        # The pixels to the right and below do see the change.
        i, j = divmod(p, W)
        later = [q for q, ok in ((p + 1, j + 1 < W), (p + W, i + 1 < H)) if ok]
        for q in later:
            assert not torch.allclose(changed[:, q], flat_ref[:, q], rtol=0, atol=1e-4), (p, q)


@pytest.mark.parametrize("shape", SHAPES)
def test_conditioned_decoder_uses_z(shape):
    dec = _decoder(shape, 4, 3, layers=3)
    x = torch.randint(0, 2, (2, *shape), generator=torch.Generator().manual_seed(0))
    z1, z2 = _latent(2, 4, seed=1), _latent(2, 4, seed=2)
    with torch.no_grad():
        p1, p2 = dec.params(x, z1), dec.params(x, z2)
    assert p1.shape == (2, 1, *shape[1:])
    # Every pixel's params move with z, including the first (which sees no image).
    assert torch.all((p1 - p2).abs().flatten(1).amin(dim=1) > 0)
    assert not torch.allclose(p1[:, :, 0, 0], p2[:, :, 0, 0])
    assert not torch.allclose(dec.log_prob(x, z1), dec.log_prob(x, z2))
    with pytest.raises(ValueError):
        dec.params(x, None)
    with pytest.raises(ValueError):
        dec.params(None, z1)


def test_unconditioned_decoder_ignores_z():
    dec = _decoder((1, 5, 5), 0, 3, layers=3)
    assert dec.latent_map is None
    x = torch.randint(0, 2, (2, 1, 5, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = dec.params(x, None)
        b = dec.params(x, torch.randn(2, 3))
    assert torch.equal(a, b)
    # Its first pixel sees nothing at all: identical params for any image.
    y = 1 - x
    with torch.no_grad():
        c = dec.params(y, None)
    assert torch.equal(a[:, :, 0, 0], c[:, :, 0, 0])
    assert torch.equal(a[0, :, 0, 0], a[1, :, 0, 0])


@pytest.mark.parametrize(("levels", "code_dim"), [(2, 4), (5, 0), (5, 3)])
def test_pixelcnn_log_prob_and_params_shape(levels, code_dim):
    shape = (2, 4, 3)
    dec = _decoder(shape, code_dim, 3, levels=levels, layers=2)
    x = torch.randint(0, levels, (3, *shape), generator=torch.Generator().manual_seed(0))
    z = _latent(3, code_dim)
    p = dec.params(x, z)
    per = 1 if levels == 2 else levels
    assert p.shape == (3, 2 * per, 4, 3)
    lp = dec.log_prob(x, z)
    assert lp.shape == (3,)
    torch.testing.assert_close(lp, dec.likelihood.log_prob(p, x))
    assert torch.all(lp < 0)


@pytest.mark.parametrize(("levels", "code_dim"), [(2, 4), (4, 0), (3, 2)])
def test_sample_shape_range_and_reproducibility(levels, code_dim):
    shape = (1, 4, 3) if levels != 3 else (2, 3, 3)
    dec = _decoder(shape, code_dim, 3, levels=levels, layers=2)
    z = _latent(3, code_dim)
    num = None if code_dim else 3

    def draw(seed):
        return dec.sample(z, generator=torch.Generator().manual_seed(seed), num=num)

    calls = []
    a = dec.sample(z, generator=torch.Generator().manual_seed(7), num=num, progress=calls.append)
    assert a.shape == (3, *shape)
    assert a.dtype == torch.long
    assert a.min() >= 0 and a.max() < levels
    assert calls == list(range(1, shape[1] * shape[2] + 1))
    assert torch.equal(a, draw(7))
    assert any(not torch.equal(a, draw(s)) for s in (8, 9, 10))
    with pytest.raises(ValueError):
        dec.sample(None)


def test_sample_follows_the_autoregressive_chain():
    """Force a deterministic rule through the params: each pixel copies its left neighbour
    (the first pixel is 1). Then the sampled image must be all ones, which needs the pixels to
    be drawn in raster order, each from params computed after its predecessors were set."""
    dec = _decoder((1, 3, 4), 0, 3, layers=1)

    def params(x, z):
        left = torch.nn.functional.pad(x.float(), (1, 0))[:, :, :, :-1]  # pixel to the left
        left[:, :, :, 0] = 1.0  # column 0 starts every row at 1
        return (2 * left - 1) * 60.0  # logit +60 (copy 1) or -60 (copy 0)

    dec.params = params
    dec.params_up_to_row = lambda x, z, row, context: params(x, z)
    # The generic loop of Decoder.sample (the cached path has its own tests, test_incremental).
    x = dec.sample(None, generator=torch.Generator().manual_seed(0), num=2, cached=False)
    assert torch.equal(x, torch.ones(2, 1, 3, 4, dtype=torch.long))


@pytest.mark.parametrize(("shape", "code_dim"), [((1, 6, 5), 3), ((2, 4, 4), 0)])
def test_sampling_computes_only_the_rows_it_needs_and_draws_the_same(shape, code_dim):
    dec = _decoder(shape, code_dim, 3, levels=3, layers=3)
    z = _latent(2, code_dim)
    x = torch.randint(0, 3, (2, *shape), generator=torch.Generator().manual_seed(1))
    full = dec.params(x, z)
    context = dec.sampling_context(z)
    for row in range(shape[1]):
        cropped = dec.params_up_to_row(x, z, row, context)
        assert cropped.shape[2] == row + 1
        torch.testing.assert_close(cropped, full[:, :, : row + 1], rtol=1e-5, atol=1e-6)
    num = None if code_dim else 2
    fast = dec.sample(z, generator=torch.Generator().manual_seed(3), num=num)
    dec.params_up_to_row = lambda x, z, row, context: dec.params(x, z)  # the whole image
    slow = dec.sample(z, generator=torch.Generator().manual_seed(3), num=num)
    assert torch.equal(fast, slow)


def test_shift_helpers():
    t = torch.arange(12.0).view(1, 1, 3, 4)
    down = shift_down(t)
    assert torch.equal(down[0, 0, 0], torch.zeros(4))
    assert torch.equal(down[0, 0, 1:], t[0, 0, :-1])
    right = shift_right(t)
    assert torch.equal(right[0, 0, :, 0], torch.zeros(3))
    assert torch.equal(right[0, 0, :, 1:], t[0, 0, :, :-1])


@pytest.mark.parametrize(("H", "W"), [(8, 8), (28, 28), (32, 32), (7, 5), (8, 4), (16, 5), (4, 16)])
@pytest.mark.parametrize("stages", [2, 3])
@pytest.mark.parametrize("levels", [2, 4])
def test_deconv_decoder_shape(H, W, stages, levels):
    torch.manual_seed(0)
    C = 1 if levels == 2 else 3
    lik = make_likelihood("auto", levels)
    dec = DeconvDecoder(lik, (C, H, W), code_dim=3, channels=4, stages=stages)
    z = torch.randn(2, 3)
    p = dec.params(None, z)
    assert p.shape == (2, C * lik.params_per_channel, H, W)
    assert not dec.autoregressive
    x = dec.sample(z, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, C, H, W) and x.dtype == torch.long
    assert x.min() >= 0 and x.max() < levels
    # Pixels are conditionally independent given z: the image is not read.
    torch.testing.assert_close(dec.params(x, z), p)
    with pytest.raises(ValueError):
        dec.params(None, None)


@pytest.mark.parametrize(("H", "W"), [(8, 8), (28, 28), (32, 32), (7, 5), (8, 4), (16, 5), (4, 16)])
@pytest.mark.parametrize("stages", [2, 3])
def test_latent_map_shape(H, W, stages):
    torch.manual_seed(0)
    m = LatentMap(3, (H, W), 4, stages)
    assert m(torch.randn(2, 3)).shape == (2, 4, H, W)


@pytest.mark.parametrize(("H", "W"), [(8, 8), (28, 28), (32, 32), (7, 5), (8, 4), (16, 5), (4, 16)])
@pytest.mark.parametrize("channels", [(4,), (4, 6), (4, 4, 8)])
def test_encoder_shape_and_independence(H, W, channels):
    torch.manual_seed(0)
    enc = Encoder(2, (H, W), channels, code_dim=5)
    x = torch.rand(3, 2, H, W) * 2 - 1
    c = enc(x)
    assert c.shape == (3, 5)
    # No batch coupling: each code depends on its own image only.
    torch.testing.assert_close(enc(x[1:2]), c[1:2])
    assert not torch.allclose(c[0], c[1])


def test_pixelcnn_with_latent_map_sizes():
    for shape in [(1, 28, 28), (1, 7, 5), (1, 32, 32)]:
        dec = _decoder(shape, 4, 3, layers=1)
        p = dec.params(torch.zeros(1, *shape, dtype=torch.long), _latent(1, 4))
        assert p.shape == (1, 1, *shape[1:])
