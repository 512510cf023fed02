"""Tests that the codec's files are as small as its tables say, and that would notice if they
were not: a file's bits against a code length added up independently from every distribution
the coder was handed (pushes cost -log2 of the symbol's mass, posterior pops refund it), and
the bench's gap arithmetic against sizes and bounds whose answer is known.

Round trips alone cannot see a loss of compression: a coder whose bits-back returned nothing
would still give every image back. The ledger here is kept outside the coder (it wraps the
stack's methods and reads only the probabilities and symbols passed to them) and uses the tables'
float masses, not the coder's quantised ones, so its sum is the code length the model promises.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import TINY as SUITE_TINY

from acn.codec import bitsback, encode
from acn.codec.ans import Stack
from acn.config import load_config
from acn.data.info import DataInfo
from acn.model import ACN

TINY = [setting for setting in SUITE_TINY if setting.startswith("model.")]
# The coder quantises every probability to 24 bits, so a symbol never costs more than this.
FLOOR = 2.0**-24
# What a file holds beyond its symbols' information: the ANS coder's final state (at most one
# 32-bit word) and the byte rounding of the last word. Measured here: 9.6 to 14.7 bits over the
# nine files of test_file_bits_are_the_code_length_of_its_tables and the trained model's.
OVERHEAD_BITS = 32


class Ledger:
    """-log2 of every pushed symbol's mass, less that of every posterior pop, in bits."""

    def __init__(self) -> None:
        self.bits = 0.0
        self.inside_posterior = 0  # pops of the dither's uniforms are the posterior's own

    def push(self, masses: np.ndarray) -> None:
        if not self.inside_posterior:
            self.bits += float(-np.log2(np.clip(masses, FLOOR, 1.0)).sum())

    def pop(self, masses: np.ndarray) -> None:
        if not self.inside_posterior:
            self.bits -= float(-np.log2(np.clip(masses, FLOOR, 1.0)).sum())


def _rows(table: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    table = np.asarray(table, np.float64)
    table = table / table.sum(axis=1, keepdims=True)
    return table[np.arange(len(table)), np.asarray(symbols, np.int64)]


def _bernoulli(bits: np.ndarray, p_one: np.ndarray) -> np.ndarray:
    p_one = np.asarray(p_one, np.float64)
    return np.where(np.asarray(bits) == 1, p_one, 1.0 - p_one)


@pytest.fixture
def ledger(monkeypatch) -> Ledger:
    """Every stack operation of the test recorded (encoder and decoder alike: use it around an
    encode only, with ``verify=False``)."""
    return install_ledger(monkeypatch)


def install_ledger(monkeypatch) -> Ledger:
    """A ledger around the stack's methods and around whatever ``pop_posterior`` is now."""
    book = Ledger()
    push_b, push_c, push_u = Stack.push_bernoulli, Stack.push_categorical, Stack.push_uniform
    pop_b, pop_c, pop_u = Stack.pop_bernoulli, Stack.pop_categorical, Stack.pop_uniform

    def push_bernoulli(self, bits, p_one):
        book.push(_bernoulli(bits, p_one))
        push_b(self, bits, p_one)

    def push_categorical(self, symbols, table):
        book.push(_rows(table, symbols))
        push_c(self, symbols, table)

    def push_uniform(self, symbols, sizes):
        book.push(1.0 / np.asarray(sizes, np.float64))
        push_u(self, symbols, sizes)

    def pop_bernoulli(self, p_one):
        bits = pop_b(self, p_one)
        book.pop(_bernoulli(bits, p_one))
        return bits

    def pop_categorical(self, table):
        symbols = pop_c(self, table)
        book.pop(_rows(table, symbols))
        return symbols

    def pop_uniform(self, sizes):
        book.pop(1.0 / np.asarray(sizes, np.float64))
        return pop_u(self, sizes)

    posterior = bitsback.pop_posterior

    def pop_posterior(stack, table, offsets):
        book.inside_posterior += 1
        try:
            bins = posterior(stack, table, offsets)
        finally:
            book.inside_posterior -= 1
        flat = np.asarray(table).reshape(-1, table.shape[-1])
        book.pop(_rows(flat, bins.reshape(-1)))  # the bits a posterior draw gives back
        return bins

    for name, fn in {
        "push_bernoulli": push_bernoulli,
        "push_categorical": push_categorical,
        "push_uniform": push_uniform,
        "pop_bernoulli": pop_bernoulli,
        "pop_categorical": pop_categorical,
        "pop_uniform": pop_uniform,
    }.items():
        monkeypatch.setattr(Stack, name, fn)
    monkeypatch.setattr(bitsback, "pop_posterior", pop_posterior)
    return book


def _model(kind: str, seed: int = 0) -> ACN:
    preset = {"acn": "digits-acn", "vae": "digits-vae", "pixelcnn": "digits-pixelcnn"}[kind]
    config = load_config(preset, TINY)
    torch.manual_seed(seed)
    model = ACN(config, DataInfo("synthetic", (1, 5, 4), 2, 0), 40)
    if model.bank is not None:
        model.bank.update(torch.arange(40), 2 * torch.randn(40, 4))
    return model.eval()


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(n, 1, 5, 4)).astype(np.uint8)


def _payload_bits(made) -> int:
    return 8 * (len(made.data) - made.header_bytes)


@pytest.mark.parametrize("kind", ["acn", "vae", "pixelcnn"])
@pytest.mark.parametrize(
    "options", [{}, {"segments": 3}, {"keep_order": True}, {"exact": True, "segments": 3}]
)
def test_file_bits_are_the_code_length_of_its_tables(kind, options, ledger):
    model, x = _model(kind), _images(23, seed=len(options))
    made = encode(model, x, verify=False, **options)
    gap = _payload_bits(made) - ledger.bits
    print(f"{kind} {options}: file {_payload_bits(made)} bits, tables {ledger.bits:.1f}")
    assert 0 <= gap <= OVERHEAD_BITS, (kind, options, _payload_bits(made), ledger.bits)


def test_the_ledger_sees_posterior_refunds(ledger):
    """The latent models' ledgers hold refunds: without them the file would be this much larger."""
    model, x = _model("acn"), _images(23, seed=5)
    refunds = []
    original = bitsback.pop_posterior

    def counting(stack, table, offsets):
        bins = original(stack, table, offsets)
        flat = np.asarray(table).reshape(-1, table.shape[-1])
        refunds.append(float(-np.log2(_rows(flat, bins.reshape(-1))).sum()))
        return bins

    bitsback.pop_posterior = counting
    try:
        made = encode(model, x, verify=False)
    finally:
        bitsback.pop_posterior = original
    assert sum(refunds) > 23 * 4  # several bits per image and dimension come back
    assert _payload_bits(made) < ledger.bits + sum(refunds)  # the refund is in the file


def test_a_coder_that_returns_no_bits_fails_the_rate_check(monkeypatch):
    """The rate check can fail: posterior draws that take nothing from the stack (a BB-ANS
    without its bits back) still round-trip but make a file the ledger does not allow."""
    model, x = _model("acn"), _images(23, seed=7)
    honest = encode(model, x, verify=False)
    rng = np.random.default_rng(0)

    def no_bits_back(stack, table, offsets):
        flat = np.asarray(table).reshape(-1, table.shape[-1])
        p = flat / flat.sum(axis=1, keepdims=True)
        return np.array([rng.choice(p.shape[1], p=row) for row in p]).reshape(table.shape[:2])

    monkeypatch.setattr(bitsback, "pop_posterior", no_bits_back)
    book = install_ledger(monkeypatch)  # the same check as above, around the broken coder
    broken = encode(model, x, verify=False)
    assert _payload_bits(broken) - book.bits > OVERHEAD_BITS  # the check fails, as it must
    assert _payload_bits(broken) > _payload_bits(honest) + 23 * 4


def test_trained_model_files_match_their_tables_and_round_trip(tmp_path, ledger):
    """A model trained long enough to be sure of most pixels (probabilities near 0 and 1, where
    the coder's 24-bit floor matters) codes at its tables' length and decodes bit for bit."""
    from acn.codec import decompress
    from acn.data.datasets import load_splits
    from acn.train.loop import train

    overrides = [s for s in SUITE_TINY if not s.startswith("train.steps")]
    # 600 steps at a high learning rate: about 10 s on one core, and a fifth of the test pixels
    # then have probabilities below 1e-3 or above 1 - 1e-3.
    settings = ["train.steps=600", "train.lr=3e-3", "train.eval_every=0"]
    config = load_config("digits-acn", [*overrides, *settings])
    train(config, tmp_path / "run")
    model = ACN.load(tmp_path / "run").eval()
    splits, _ = load_splits(config.data)
    x = splits["test"].images[:40].numpy().astype(np.uint8)
    with torch.no_grad():
        images = torch.from_numpy(x).long()
        params = model.decoder.params(images, model.encode(images))
    p = torch.sigmoid(params).flatten()
    assert ((p < 1e-3) | (p > 1 - 1e-3)).float().mean() > 0.1  # saturated pixels exist
    made = encode(model, x, verify=False, segments=3)
    gap = _payload_bits(made) - ledger.bits
    print(f"trained: file {_payload_bits(made)} bits, tables {ledger.bits:.1f}")
    assert 0 <= gap <= OVERHEAD_BITS
    back = decompress(model, made.data)
    np.testing.assert_array_equal(back, x[made.order])
    # the exact path too: its integer tables saturate where the float ones do
    ledger.bits = 0.0
    exact = encode(model, x, verify=False, segments=3, exact=True)
    gap = _payload_bits(exact) - ledger.bits
    print(f"trained, exact: file {_payload_bits(exact)} bits, tables {ledger.bits:.1f}")
    assert 0 <= gap <= OVERHEAD_BITS
    np.testing.assert_array_equal(decompress(model, exact.data), x[exact.order])


def test_gap_arithmetic_on_known_sizes(monkeypatch, tiny_runs):
    """The bench's gaps from files and bounds whose answer is worked out by hand: 10 images in
    files of 45 and 50 bytes are 36 and 40 bits per image, 24.953 and 27.726 nats, against an
    ordered bound of 25 nats: -0.189% and +10.904%; the exact path's files of 50 and 55 bytes
    are 40 and 44 bits, 10% larger on average than the float path's 38."""
    from acn.experiments import bench_codec as bench

    sizes = iter([45, 50, 50, 55])

    class Made:
        def __init__(self, size: int) -> None:
            self.data, self.header_bytes, self.order = b"\0" * size, 4, np.arange(10)
            self.plan = bitsback.plan_segments(10, 1, 1)

    seen = {}

    def made(model, images, **options):
        seen["images"] = np.asarray(images)
        return Made(next(sizes))

    monkeypatch.setattr(bench, "encode", made)
    monkeypatch.setattr(bench, "decompress", lambda model, data: seen["images"])
    monkeypatch.setattr(bench, "bounds", lambda *a, **k: {"ordered": 25.0, "unordered": 30.0})
    monkeypatch.setattr(bench, "_soft_tour", lambda *a, **k: [20.0, 22.0])
    monkeypatch.setattr(bench, "baseline_sizes", lambda images: {})
    report = bench.bench_codec(tiny_runs["acn"], seeds=2, limit=10, search=2)
    nats = [36 * math.log(2), 40 * math.log(2)]
    assert report["file_nats_per_seed"] == pytest.approx([24.9533, 27.7259], abs=1e-4)
    assert report["gap_percent_per_seed"] == pytest.approx([-0.18680, 10.90355], abs=1e-4)
    assert report["gap_percent_mean"] == pytest.approx(100 * (np.mean(nats) / 25 - 1))
    assert report["best_of_seeds"]["bits_per_image"] == 36.0
    assert report["best_of_seeds"]["gap_percent"] == pytest.approx(-0.18680, abs=1e-4)
    assert report["seed_search"]["file_nats_per_search"] == pytest.approx([24.9533], abs=1e-4)
    soft = report["soft_tour"]
    assert soft["saving_nats_per_image"] == pytest.approx(np.mean(nats) - 21.0)
    assert soft["gap_percent_per_seed"] == pytest.approx([-20.0, -12.0])
    assert soft["ceiling_nats_per_image"] == pytest.approx(math.lgamma(11) / 10)
    exact = report["exact_path"]
    assert exact["file_nats_per_seed"] == pytest.approx([27.7259, 30.4985], abs=1e-4)
    assert exact["size_vs_float_percent"] == pytest.approx(100 * (42 / 38 - 1))
