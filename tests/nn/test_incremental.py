"""The cached incremental decoder gives the full pass's parameters and samples, for every decoder
configuration the presets use (kernels, layer counts, z through the global bias and the spatial
map, Bernoulli, categorical and logistic-mixture outputs, 1 and 3 channels)."""

from __future__ import annotations

import pytest
import torch

from acn.nn.build import make_likelihood
from acn.nn.incremental import IncrementalPixelCNN
from acn.nn.pixelcnn import GatedPixelCNN

CONFIGS = {
    # name: (C, H, W, levels, likelihood, code_dim, kernel, layers, stages[, first kernel])
    "binary 8x8, z": (1, 8, 8, 2, "auto", 4, 3, 3, 2),
    "17 levels, no z": (1, 8, 8, 17, "auto", 0, 3, 2, 2),
    "kernel 5, one layer": (1, 7, 6, 2, "bernoulli", 3, 5, 1, 1),
    "kernel 7, 4 layers": (1, 9, 9, 2, "auto", 2, 7, 4, 2),
    "rgb logistic mixture, z": (3, 6, 5, 256, "logistic_mixture", 3, 3, 2, 1),
    "rgb logistic mixture, no z": (3, 5, 5, 256, "logistic_mixture", 0, 5, 2, 1),
    "rgb categorical, z": (3, 4, 4, 256, "categorical", 2, 3, 3, 1),
    "28x28 binary, z": (1, 28, 28, 2, "auto", 16, 3, 2, 2),
    "wide first layer (the mnist5k shape)": (1, 12, 11, 2, "auto", 3, 3, 3, 2, 9),
    "wide first layer, rgb, no z": (3, 5, 6, 256, "logistic_mixture", 0, 3, 2, 1, 7),
}


def _net(name: str, seed: int = 0):
    C, H, W, levels, likelihood, code_dim, kernel, layers, stages, *first = CONFIGS[name]
    torch.manual_seed(seed)
    lik = make_likelihood(likelihood, levels, 3)
    net = GatedPixelCNN(lik, (C, H, W), code_dim, 8, layers, kernel, 4, stages, *first).eval()
    # Non-zero biases everywhere, so that a bias applied where the full pass has none shows.
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim == 1:
                p.uniform_(-0.5, 0.5)
    z = torch.randn(3, code_dim) if code_dim else None
    return net, z, levels


@pytest.mark.parametrize("name", CONFIGS)
def test_every_pixel_gets_the_parameters_of_the_full_pass(name):
    net, z, levels = _net(name)
    C, H, W = net.image_shape
    x = torch.randint(0, levels, (3, C, H, W), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = net.params(x, z)  # one teacher-forced pass over the finished image
    cached = IncrementalPixelCNN(net, z, 3).teacher_forced_params(x)
    assert cached.shape == full.shape
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CONFIGS)
def test_samples_with_the_same_generator_are_the_same_images(name):
    net, z, _ = _net(name)
    seen = []
    a = net.sample(z, torch.Generator().manual_seed(2), num=3, cached=False)
    b = net.sample(z, torch.Generator().manual_seed(2), num=3, progress=seen.append)
    assert torch.equal(a, b)
    C, H, W = net.image_shape
    assert seen == list(range(1, H * W + 1))  # pixels done, in raster order


def test_the_cache_can_fail_a_wrong_input_changes_the_parameters():
    """The comparison is not vacuous: the parameters depend on the pixels before each one."""
    net, z, levels = _net("binary 8x8, z")
    x = torch.zeros(3, 1, 8, 8, dtype=torch.long)
    y = x.clone()
    y[:, :, 2, 3] = 1
    px = IncrementalPixelCNN(net, z).teacher_forced_params(x)
    py = IncrementalPixelCNN(net, z).teacher_forced_params(y)
    flat_x, flat_y = px.flatten(2), py.flatten(2)
    first_changed = int((flat_x != flat_y).any(dim=(0, 1)).nonzero()[0])
    assert first_changed == 2 * 8 + 3 + 1  # the next pixel is the first to see it


def test_a_conditioned_decoder_needs_z_and_a_count_without_it():
    net, z, _ = _net("binary 8x8, z")
    with pytest.raises(ValueError, match="give z"):
        IncrementalPixelCNN(net, None, 3)
    plain, _, _ = _net("17 levels, no z")
    with pytest.raises(ValueError, match="number of images"):
        IncrementalPixelCNN(plain, None)
    assert IncrementalPixelCNN(plain, None, 2).sample(torch.Generator()).shape == (2, 1, 8, 8)
