"""The exact coding path: integer networks that agree with the float ones, tables pinned to the
digit, teacher-forced and pixel-by-pixel passes equal to the bit, round trips for every model
kind, and files that decode in fresh processes under other kernels, thread counts and matmul
precisions."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_codec import _images, _model

from acn.codec import container, decompress, encode
from acn.codec import intmath as im
from acn.codec.exact import ExactNetworks, gaussian_masses
from acn.codec.intdecode import decode_pixels
from acn.codec.intnet import IntLinear, IntPixelCNN, input_units
from acn.errors import CodecError

# sha256 of each table's int64 samples: the tables are computed in decimal arithmetic and must
# be the same digits on every machine and Python. A change here changes every exact file: bump
# acn.codec.exact.EXACT_ARITHMETIC with it.
PINNED = {
    "tanh_table": "7577daab0cd02f27",
    "sigmoid_table": "af199541597f77ef",
    "probability_table": "63622a8fd24ec13d",
    "exp_table": "e50dbfab4b64d0a5",
    "softplus_table": "531d3a5f8a79f533",
    "phi_table": "11b843d042ff9c34",
    "log_table": "ec0a35ac6a62fddc",
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_tables_are_pinned(name):
    values = getattr(im, name)().values
    assert hashlib.sha256(values.astype("<i8").tobytes()).hexdigest()[:16] == PINNED[name]


def test_tables_agree_with_the_float_functions():
    x = torch.arange(-70_000, 70_000, 37, dtype=torch.float64)  # activation units
    real = x / 4096
    assert (im.tanh_table()(x) - torch.round(torch.tanh(real) * 4096)).abs().max() <= 1
    assert (im.sigmoid_table()(x) - torch.round(torch.sigmoid(real) * 4096)).abs().max() <= 1
    p = im.probability_table()(x) / 2**24
    assert (p - torch.sigmoid(real)).abs().max() < 5e-7
    sp = im.softplus(x) / 2**24
    assert (sp - torch.nn.functional.softplus(real)).abs().max() < 1e-6
    e = im.exp_table()(-x.abs()) / 2**32
    assert (e - torch.exp(-real.abs())).abs().max() < 3e-6
    from scipy.special import ndtr

    t = np.arange(-700_000, 700_000, 977)  # units of 2^-16
    assert np.abs(im.phi_table().numpy(t) / 2**32 - ndtr(t / 65536)).max() < 1e-6
    # Phi is symmetric to the unit and monotone
    values = im.phi_table().values
    np.testing.assert_array_equal(values + values[::-1], 1 << 32)
    assert (np.diff(values) >= 0).all()


def test_the_networks_read_equals_the_interpolation():
    """The networks read a table precomputed at every input; it must be the interpolation."""
    rng = np.random.default_rng(1)
    for name in ("tanh_table", "sigmoid_table", "probability_table", "exp_table"):
        table = getattr(im, name)()
        x = rng.integers(-80_000, 80_000, size=5000)
        got = table(torch.from_numpy(x).double()).numpy().astype(np.int64)
        np.testing.assert_array_equal(got, table.numpy(x), err_msg=name)


def test_exact_counts_are_integer_shares_of_the_total():
    rng = np.random.default_rng(0)
    masses = rng.integers(0, 1 << 30, size=(50, 7))
    masses[3] = 0  # an empty row becomes uniform
    masses[4] = [5, 0, 0, 0, 0, 0, 0]
    counts = im.exact_counts(masses, 1 << 24)
    assert (counts.sum(axis=1) == 1 << 24).all()
    share = masses * (1 << 24) / np.maximum(masses.sum(axis=1, keepdims=True), 1)
    ok = masses.sum(axis=1) > 0
    assert np.abs(counts[ok] - share[ok]).max() < 1  # floor plus at most one
    assert (counts[3] >= (1 << 24) // 7).all()
    assert counts[4, 0] == 1 << 24


def test_integer_layers_follow_the_float_ones():
    torch.manual_seed(0)
    for module, x in (
        (torch.nn.Linear(30, 8), torch.randn(5, 30)),
        (torch.nn.Conv2d(3, 6, 3, padding=1), torch.randn(2, 3, 7, 7)),
        (
            torch.nn.ConvTranspose2d(4, 5, 3, stride=2, padding=1, output_padding=1),
            torch.randn(2, 4, 3, 3),
        ),
    ):
        layer = IntLinear(module)
        out = layer(torch.round(x.double() * 4096)) / 4096
        with torch.no_grad():
            ref = module(torch.round(x * 4096) / 4096).double()
        assert (out - ref).abs().max() < 2e-3, type(module).__name__


def test_weights_too_wide_for_exact_sums_are_refused():
    wide = torch.nn.Linear(4, 2)
    with torch.no_grad():
        wide.bias.fill_(1e30)
    with pytest.raises(CodecError, match="exact"):
        IntLinear(wide)


@pytest.mark.parametrize("levels", [2, 5])
def test_pixel_by_pixel_decoding_equals_the_teacher_forced_pass(levels):
    model = _model("acn", levels)
    net = IntPixelCNN(model.decoder)
    x = torch.from_numpy(_images(6, levels)).long()
    z = torch.round(torch.randn(6, 4, generator=torch.Generator().manual_seed(3)) * 4096)
    whole = net.params(x, z.double())
    seen = torch.zeros_like(whole)

    def given(params, row, col):
        assert isinstance(params, np.ndarray) and params.dtype == np.float64
        seen[:, :, row, col] = torch.from_numpy(params)
        return x[:, :, row, col].numpy()

    decoded = decode_pixels(net, z.double(), 6, given)
    torch.testing.assert_close(decoded, x, rtol=0, atol=0)
    assert torch.equal(seen, whole)  # to the bit: both are exact


def test_tables_handed_to_a_worker_read_the_same(monkeypatch):
    """A decoding worker adopts the parent's tables instead of computing them (pickled as the
    worker's job is); the same reads, and a table the worker has is kept."""
    import pickle

    tables = pickle.loads(pickle.dumps(im.network_tables()))
    assert {"tanh_table", "sigmoid_table", "probability_table", "exp_table"} <= set(tables)
    x = np.arange(-70000, 70000, 7, dtype=np.float64)
    for name, table in tables.items():
        assert np.array_equal(table.values, getattr(im, name)().values)
        if name != "phi_table" and name != "log_table":
            assert np.array_equal(table.take(x), getattr(im, name)().take(x))
    monkeypatch.setattr(im, "_COMPUTED", {})
    own = im.tanh_table()  # computed afresh
    im.adopt_tables(tables)
    assert im.tanh_table() is own and im.sigmoid_table() is tables["sigmoid_table"]


def test_the_numpy_rows_and_table_reads_equal_torchs():
    """The decoder's per-pixel path (numpy) computes the layers' and tables' integers."""
    g = torch.Generator().manual_seed(5)
    conv = torch.nn.Conv2d(3, 8, (1, 4))
    layer = IntLinear(conv)
    x = torch.round(torch.randn(7, 3, 1, 4, generator=g, dtype=torch.float64) * 3 * 4096)
    want = layer(x)[:, :, 0, 0]
    assert np.array_equal(layer.rows(x.flatten(1).numpy()), want.numpy())
    last = x.permute(0, 2, 3, 1).flatten(1).numpy()  # (row, column, channel) order
    assert np.array_equal(layer.rows(last, channels_last=True), want.numpy())
    wide = torch.round(torch.randn(1000, generator=g, dtype=torch.float64) * 40 * 4096)
    for table in (im.tanh_table(), im.sigmoid_table(), im.probability_table(), im.exp_table()):
        assert np.array_equal(table.take(wide.numpy()), table(wide).numpy())


def test_windows_taken_in_chunks_give_the_same_integers(monkeypatch):
    """A large batch's convolutions unfold a few images at a time: the same integers."""
    import acn.codec.intnet as intnet

    model = _model("acn", 5)
    net = IntPixelCNN(model.decoder)
    x = torch.from_numpy(_images(9, 5)).long()
    z = torch.round(torch.randn(9, 4, generator=torch.Generator().manual_seed(4)) * 4096)
    whole = net.params(x, z.double())
    monkeypatch.setattr(intnet, "WINDOW_ELEMENTS", 1)  # one image at a time
    assert torch.equal(net.params(x, z.double()), whole)


@pytest.mark.parametrize("code", [True, False])
def test_teacher_forced_passes_taken_a_few_images_at_a_time_give_the_same_integers(
    monkeypatch, code
):
    import acn.codec.intnet as intnet

    model = _model("acn" if code else "pixelcnn", 2)
    net = IntPixelCNN(model.decoder)
    x = torch.from_numpy(_images(9, 2)).long()
    z = torch.round(torch.randn(9, 4, generator=torch.Generator().manual_seed(6)) * 4096)
    z = z.double() if code else None
    whole = net.params(x, z)
    monkeypatch.setattr(intnet, "PASS_ELEMENTS", 1)  # one image a pass
    assert torch.equal(net.params(x, z), whole)


def test_the_integer_decoder_follows_the_float_one():
    model = _model("acn", 2)
    x = torch.from_numpy(_images(6)).long()
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    exact = IntPixelCNN(model.decoder).params(x, torch.round(z.double() * 4096)) / 4096
    with torch.no_grad():
        ref = model.decoder.params(x, torch.round(z * 4096) / 4096).double()
    assert (exact - ref).abs().max() < 5e-3


def test_gaussian_masses_sum_to_one_and_follow_the_cdf():
    edges = np.arange(-20, 21)[None] * 2896  # activation units
    masses = gaussian_masses(np.array([1000]), np.array([1 << 24]), edges)
    assert masses.sum() == 1 << 32
    from scipy.special import ndtr

    cdf = ndtr((edges[0] - 1000) / 4096)
    ref = np.diff(np.concatenate([[0], cdf, [1]]))
    assert np.abs(masses[0] / 2**32 - ref).max() < 1e-6


@pytest.mark.parametrize("kind", ["acn", "vae", "pixelcnn"])
@pytest.mark.parametrize("n", [1, 7, 23])
def test_exact_round_trips(kind, n):
    model, x = _model(kind), _images(n, seed=n)
    made = encode(model, x, segments=3, seeds=2, exact=True)
    assert container.parse(made.data).header.exact
    np.testing.assert_array_equal(decompress(model, made.data), x[made.order])


@pytest.mark.parametrize("kind", ["acn", "vae"])
def test_exact_categorical_pixels_deconv_and_kept_order(kind):
    for levels, decoder in ((5, "pixelcnn"), (2, "deconv")):
        model, x = _model(kind, levels, decoder=decoder), _images(9, levels)
        made = encode(model, x, keep_order=True, exact=True)
        np.testing.assert_array_equal(decompress(model, made.data), x)


def test_exact_files_cost_what_float_files_cost():
    model, x = _model("acn"), _images(60, seed=4)
    exact = encode(model, x, segments=3, exact=True, verify=False)
    floats = encode(model, x, segments=3, verify=False)
    assert abs(len(exact.data) - len(floats.data)) <= 0.03 * len(floats.data) + 4


def test_exact_files_are_tied_to_the_integer_model_only():
    model, x = _model("acn"), _images(7)
    made = encode(model, x, exact=True)
    other = _model("acn", seed=1)
    with pytest.raises(CodecError):
        decompress(other, made.data)
    # the fingerprint covers the integer weights and settings, not the float stack
    net = ExactNetworks(model, 2**-0.5, 2.0)
    assert net.fingerprint(b"x") == ExactNetworks(model, 2**-0.5, 2.0).fingerprint(b"x")


def _settings() -> list[tuple[str, dict, list[str]]]:
    cases = [
        ("default", {}, []),
        ("aten-default", {"ATEN_CPU_CAPABILITY": "default"}, []),
        ("aten-avx2", {"ATEN_CPU_CAPABILITY": "avx2"}, []),
        ("onednn-avx2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, []),
        ("threads-2", {}, ["--threads", "2"]),
        ("matmul-high", {}, ["--matmul", "high"]),
    ]
    if torch.backends.cpu.get_cpu_capability() == "AVX512":
        cases.append(("aten-avx512", {"ATEN_CPU_CAPABILITY": "avx512"}, []))
    return cases


def test_exact_files_decode_in_fresh_processes_under_other_kernels(tmp_path):
    """Written here, decoded there; written there, decoded here: under every instruction-set
    setting of torch and oneDNN, 2 threads and TF32-class matmul precision. The model travels
    as an exported folder (float weights: the quantisation is exact, so they are enough)."""
    model, x = _model("acn", 5), _images(23, levels=5)
    model.save_pretrained(tmp_path / "model")
    np.save(tmp_path / "images.npy", x)
    references = {
        suffix: encode(model, x, exact=True, segments=3, soft_tour=soft)
        for suffix, soft in (("", False), ("-soft", True))  # the soft tour's choices too
    }
    for suffix, reference in references.items():
        (tmp_path / f"reference{suffix}.acnz").write_bytes(reference.data)
    worker = Path(__file__).with_name("portable_worker.py")
    for tag, env, args in _settings():
        run_env = {**os.environ, **env}
        done = subprocess.run(
            [sys.executable, str(worker), str(tmp_path), tag, *args],
            env=run_env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, (tag, done.stderr[-2000:])
        for suffix, reference in references.items():
            want = x[reference.order]
            np.testing.assert_array_equal(np.load(tmp_path / f"{tag}{suffix}.npy"), want)
            theirs = (tmp_path / f"{tag}{suffix}.acnz").read_bytes()
            assert theirs == reference.data, tag  # the same bytes, whatever the kernels
            np.testing.assert_array_equal(decompress(model, theirs), want)


def test_inputs_are_exact_fractions():
    levels = torch.arange(17)
    units = input_units(levels, 17)
    np.testing.assert_array_equal(units.numpy(), (np.arange(17) * 512 - 4096))
