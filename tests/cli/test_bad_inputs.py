"""Bad input through the command line, table-driven: each case must give exactly one line on
stderr that names the problem, exit code 2 and no traceback, and leave no half-written run.

Every case runs in-process through ``acn.cli.parser.main`` (fast); the slow tier runs the whole
table again as real ``python -m acn`` processes. The files each case needs are written once, in the
real formats, by the ``bad`` fixture; ``{m}`` in a case stands for that folder, ``{run}`` for a
finished tiny ACN run and ``{tmp}`` for a fresh per-case folder.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from dataset_files import (
    save_image,
    write_amat,
    write_cifar,
    write_cifar_batch,
    write_idx,
    write_imagenet,
    write_mnist,
)

from acn.cli.parser import main
from acn.store.checkpoint import save_checkpoint

TINY_ARGS = list(TINY)


class Evil:
    """Unpickling this runs ``os.system``: the payload a loader must never execute."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture(scope="module")
def bad(tiny_runs, tmp_path_factory) -> Path:
    m = tmp_path_factory.mktemp("bad inputs é")
    last = tiny_runs["acn"] / "checkpoints" / "last.pt"
    raw = last.read_bytes()
    (m / "empty.pt").write_bytes(b"")
    (m / "junk.pt").write_bytes(os.urandom(4096))
    (m / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    (m / "notes.json").write_text('{"step": 3}')
    torch.save(torch.zeros(3), m / "tensor.pt")
    payload = torch.load(last, weights_only=True)
    torch.save({**payload, "format_version": 99}, m / "future.pt")
    del payload["crc32"]  # the files below are well-formed checkpoints with their own checksums
    other = json.loads(json.dumps(payload["config"]))
    other["model"]["code_dim"] = 7
    save_checkpoint(m / "other-arch.pt", {**payload, "config": other})
    save_checkpoint(m / "bad-config.pt", {**payload, "config": {"model": {"prior": "vq"}}})
    torch.save({"format": "acn-checkpoint", "x": Evil(m / "pwned")}, m / "evil.pt")
    with (m / "evil-legacy.pt").open("wb") as f:  # the pre-zip torch format: a bare pickle
        pickle.dump({"format": "acn-checkpoint", "x": Evil(m / "pwned")}, f, protocol=2)
    (m / "syntax.toml").write_text("[model\nprior = 'acn'\n")
    (m / "unknown.toml").write_text("[model]\nprior = 'acn'\nfancy = true\n")
    (m / "wrong-type.toml").write_text("[train]\nsteps = 'many'\n")
    (m / "sections.toml").write_text("model = 3\n")
    (m / "not-utf8.toml").write_bytes(b"[train]\nsteps = 3 # \xff\xfe\n")
    export = m / "export"
    shutil.copytree(tiny_runs["acn"], m / "run copy")
    assert main(["export", str(tiny_runs["acn"]), "--out", str(export)]) == 0
    (m / "export-bad-json").mkdir()
    (m / "export-bad-json" / "config.json").write_text("{not json")
    shutil.copy(export / "model.safetensors", m / "export-bad-json")
    (m / "no-checkpoint").mkdir()
    _bad_data(m / "data")
    return m


def _bad_data(d: Path) -> None:
    """One folder per broken dataset, each otherwise in its real layout."""
    rng = np.random.default_rng(0)

    def mnist(name: str, **kw) -> Path:
        write_mnist(d / name, rng, **kw)
        return d / name / "MNIST" / "raw"

    (d / "empty-root").mkdir(parents=True)
    (mnist("idx-empty") / "train-images-idx3-ubyte.gz").write_bytes(b"")
    raw = mnist("idx-truncated", gz=False) / "train-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:-100])
    gz = mnist("idx-corrupt-gz") / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:20] + b"\x00garbage" * 10)
    write_idx(mnist("idx-shape") / "train-images-idx3-ubyte.gz", np.zeros((60, 27, 27), np.uint8))
    write_idx(mnist("idx-labels") / "train-labels-idx1-ubyte.gz", np.full(60, 12, np.uint8))
    for kind, content in {
        "empty": "",
        "range": "2 " * 783 + "2\n",
        "short": "0 " * 700 + "1\n",
    }.items():
        for split in ("train", "valid", "test"):
            write_amat(
                d / f"amat-{kind}" / "binarized_mnist" / f"binarized_mnist_{split}.amat",
                np.zeros((3, 784), np.uint8),
            )
        (d / f"amat-{kind}" / "binarized_mnist" / "binarized_mnist_train.amat").write_text(content)
    write_cifar(d / "cifar-truncated", rng, per_batch=10)
    batch = d / "cifar-truncated" / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    write_cifar(d / "cifar-junk", rng, per_batch=10)
    (d / "cifar-junk" / "cifar-10-batches-py" / "test_batch").write_bytes(os.urandom(2000))
    write_cifar(d / "cifar-evil", rng, per_batch=10)
    (d / "cifar-evil" / "cifar-10-batches-py" / "data_batch_1").write_bytes(
        pickle.dumps({b"data": Evil(d / "pwned")}, protocol=2)
    )
    write_cifar(d / "cifar-shape", rng, per_batch=10)
    write_cifar_batch(
        d / "cifar-shape" / "cifar-10-batches-py" / "data_batch_2",
        np.zeros((10, 3000), np.uint8),
        np.zeros(10, np.int64),
    )
    for kind in ("corrupt", "truncated", "shape"):
        write_imagenet(d / f"imagenet-{kind}", rng)
    (d / "imagenet-corrupt" / "imagenet32" / "val_data.npz").write_bytes(os.urandom(300))
    npz = d / "imagenet-truncated" / "imagenet32" / "train_data_batch_4.npz"
    npz.write_bytes(npz.read_bytes()[:-200])
    np.savez(
        d / "imagenet-shape" / "imagenet32" / "train_data_batch_2.npz",
        data=np.zeros((3, 3000), np.uint8),
        labels=np.ones(3, np.int64),
    )
    celeba = d / "celeba-no-partition" / "celeba" / "img_align_celeba"
    save_image(celeba / "000001.jpg", np.zeros((218, 178, 3), np.uint8))
    broken = d / "celeba-bad-jpeg" / "celeba"
    save_image(broken / "img_align_celeba" / "000001.jpg", np.zeros((218, 178, 3), np.uint8))
    (broken / "img_align_celeba" / "000002.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (broken / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 0\n")
    (d / "folder-empty" / "train").mkdir(parents=True)
    for i in range(6):
        save_image(d / "folder-bad" / f"{i}.png", np.zeros((8, 8, 3), np.uint8))
    (d / "folder-bad" / "6.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")


# (id, argv, needle): the needle must appear in the single stderr line.
CASES = [
    # Config values and files.
    ("unknown key", ["train", "digits-acn", "model.fancy=1"], "unknown key model.fancy"),
    ("unknown section", ["train", "digits-acn", "optim.lr=1"], "unknown key optim"),
    ("wrong type int", ["train", "digits-acn", "train.steps=abc"], "expected an integer"),
    ("wrong type bool", ["train", "digits-acn", "train.progress=maybe"], "expected true or false"),
    ("wrong type list", ["train", "digits-acn", "model.encoder_channels=a,b"], "expected an int"),
    ("negative steps", ["train", "digits-acn", "train.steps=-5"], "train.steps=-5 is out of range"),
    ("zero components", ["train", "digits-acn", "model.prior_components=0"], "prior_components"),
    ("zero logistic", ["train", "digits-acn", "model.likelihood_components=0"], "likelihood_comp"),
    ("k above bank", ["train", "digits-acn", *TINY_ARGS, "codebank.k=5000"], "codebank.k=5000"),
    ("not KEY=VALUE", ["train", "digits-acn", "train.steps"], "is not KEY=VALUE"),
    ("even kernel", ["train", "digits-acn", "model.pixelcnn_kernel=4"], "must be odd"),
    ("unknown k-NN back-end", ["train", "digits-acn", "codebank.backend=annoy"], "torch, faiss"),
    ("unknown precision", ["train", "digits-acn", "train.precision=fp8"], "auto, float32, bf16"),
    (
        "sharded unique",
        ["train", "digits-acn", "codebank.placement=sharded", "codebank.unique=true"],
        "needs codebank.placement=replicated",
    ),
    ("nan lr", ["train", "digits-acn", "train.lr=nan"], "expected a finite number"),
    ("batch > data", ["train", "digits-acn", *TINY_ARGS, "train.batch_size=5000"], "larger than"),
    (
        "bernoulli grey",
        ["train", "digits-vae", "data.binarize=false", "model.likelihood=bernoulli"],
        "needs binary images",
    ),
    ("unknown dataset", ["train", "digits-acn", "data.name=svhn"], "choose one of"),
    (
        "binarize cifar",
        ["train", "digits-acn", "data.name=cifar10", "data.binarize=true"],
        "applies to digits, mnist and mnist5k only",
    ),
    ("threshold range", ["train", "digits-acn", "data.threshold=40"], "digits levels are 0..16"),
    ("two channels", ["train", "digits-acn", "data.channels=2"], "data.channels=2"),
    ("no cuda", ["train", "digits-acn", *TINY_ARGS, "train.device=cuda"], "no CUDA device"),
    ("unknown preset", ["train", "nope"], "unknown preset"),
    ("missing toml", ["train", "{tmp}/missing.toml"], "config file not found"),
    ("toml syntax", ["train", "{m}/syntax.toml"], "not valid TOML"),
    ("toml unknown key", ["train", "{m}/unknown.toml"], "unknown key model.fancy"),
    ("toml wrong type", ["train", "{m}/wrong-type.toml"], "train.steps: expected an integer"),
    ("toml section", ["train", "{m}/sections.toml"], "model: expected a table"),
    ("toml not utf-8", ["train", "{m}/not-utf8.toml"], "not-utf8.toml"),
    # Checkpoints.
    ("missing ckpt", ["eval", "{tmp}/none.pt"], "checkpoint not found"),
    ("folder no ckpt", ["eval", "{m}/no-checkpoint"], "without checkpoints/last.pt"),
    ("empty ckpt", ["eval", "{m}/empty.pt"], "not a readable checkpoint"),
    ("junk ckpt", ["eval", "{m}/junk.pt"], "not a readable checkpoint"),
    ("truncated ckpt", ["eval", "{m}/truncated.pt"], "not a readable checkpoint"),
    ("json as ckpt", ["sample", "{m}/notes.json", "--mode", "prior"], "not a readable checkpoint"),
    ("tensor file", ["eval", "{m}/tensor.pt"], "not an acn checkpoint"),
    ("future version", ["eval", "{m}/future.pt"], "format version 99"),
    ("other arch", ["eval", "{m}/other-arch.pt"], "do not fit the architecture"),
    ("bad saved config", ["export", "{m}/bad-config.pt"], "does not describe a model"),
    ("crafted pickle", ["eval", "{m}/evil.pt"], "refused to load"),
    ("crafted legacy", ["train", "digits-acn", "--resume", "{m}/evil-legacy.pt"], "refused"),
    (
        "resume other config",
        ["train", "digits-vae", *TINY_ARGS, "--resume", "{m}/run copy"],
        "cannot resume",
    ),
    (
        "resume into a run",
        ["train", "digits-acn", *TINY_ARGS, "--out", "{m}/run copy"],
        "already holds a run",
    ),
    ("bad export json", ["sample", "{m}/export-bad-json", "--mode", "prior"], "not valid JSON"),
    # Command-line values.
    ("eval split", ["eval", "{run}", "--split", "holdout"], "holdout"),
    ("eval samples", ["eval", "{run}", "--samples", "0"], "--samples"),
    ("sample mode", ["sample", "{run}", "--mode", "dream"], "dream"),
    ("sample num", ["sample", "{run}", "--mode", "prior", "--num", "0"], "--num"),
    (
        "neighbours > data",
        ["sample", "{run}", "--mode", "neighbours", "--per-image", "99999"],
        "99999",
    ),
    ("unknown command", ["frobnicate"], "invalid choice"),
    # Dataset files: missing, empty, truncated, corrupted, wrong shape or range, per format.
    *[
        (
            f"data {name} {preset}",
            ["train", preset, *TINY_ARGS, "data.root={m}/data/" + name, *extra],
            needle,
        )
        for name, preset, extra, needle in [
            ("empty-root", "mnist-acn", [], "binarized_mnist_train.amat"),
            ("empty-root", "cifar10-acn", [], "cifar-10-batches-py"),
            ("empty-root", "imagenet32-acn", [], "imagenet32"),
            ("empty-root", "celeba-acn", [], "celeba"),
            ("idx-empty", "mnist-vae", ["data.name=mnist"], "train-images-idx3-ubyte.gz"),
            ("idx-truncated", "mnist-vae", ["data.name=mnist"], "train-images-idx3-ubyte"),
            ("idx-corrupt-gz", "mnist-vae", ["data.name=mnist-dynamic"], "t10k-images-idx3"),
            ("idx-shape", "mnist-vae", ["data.name=mnist"], "train-images-idx3-ubyte"),
            ("idx-labels", "mnist-vae", ["data.name=mnist"], "train-labels-idx1-ubyte"),
            ("amat-empty", "mnist-acn", [], "binarized_mnist_train.amat"),
            ("amat-range", "mnist-acn", [], "binarized_mnist_train.amat"),
            ("amat-short", "mnist-acn", [], "binarized_mnist_train.amat"),
            ("cifar-truncated", "cifar10-acn", [], "data_batch_3"),
            ("cifar-junk", "cifar10-acn", [], "test_batch"),
            ("cifar-evil", "cifar10-acn", [], "data_batch_1"),
            ("cifar-shape", "cifar10-acn", [], "data_batch_2"),
            ("imagenet-corrupt", "imagenet32-acn", [], "val_data.npz"),
            ("imagenet-truncated", "imagenet32-acn", [], "train_data_batch_4.npz"),
            ("imagenet-shape", "imagenet32-acn", [], "train_data_batch_2.npz"),
            ("celeba-no-partition", "celeba-acn", [], "list_eval_partition.txt"),
            ("celeba-bad-jpeg", "celeba-acn", [], "000002.jpg"),
            ("folder-empty", "cifar10-acn", ["data.name=folder"], "no images"),
            ("folder-bad", "cifar10-acn", ["data.name=folder"], "6.png"),
        ]
    ],
    ("missing --out", ["train", "digits-acn", "--out"], "expected one argument"),
]


def _argv(case_args, bad, run, tmp) -> list[str]:
    out = [a.format(m=bad, run=run, tmp=tmp) for a in case_args]
    if out[0] in ("train", "export") and "--out" not in out:
        out += ["--out", str(tmp / "out")]
    if out[0] in ("eval", "sample") and "--out" not in out:
        out += ["--out", str(tmp / ("out.json" if out[0] == "eval" else "out.png"))]
    return out


def _check(code: int, err: str, needle: str, bad: Path, tmp: Path) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert not (bad / "pwned").exists(), "a crafted pickle ran its payload"
    assert not (bad / "data" / "pwned").exists(), "a crafted CIFAR batch ran its payload"
    assert not (tmp / "out" / "checkpoints" / "last.pt").exists()
    assert not (tmp / "out.json").exists() and not (tmp / "out.png").exists()


def test_the_table_is_large_enough():
    names = [c[0] for c in CASES]
    assert len(CASES) >= 60 and len(set(names)) == len(names), sorted(names)


@pytest.mark.parametrize(("case", "args", "needle"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_in_process(case, args, needle, bad, tiny_runs, tmp_path, capsys):
    argv = _argv(args, bad, tiny_runs["acn"], tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    _check(code, err, needle, bad, tmp_path)
    print(f"{case}: {err.strip()}")  # the table of messages, shown with -s


@pytest.mark.slow
@pytest.mark.parametrize(("case", "args", "needle"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_as_a_process(case, args, needle, bad, tiny_runs, tmp_path):
    argv = _argv(args, bad, tiny_runs["acn"], tmp_path)
    proc = subprocess.run([sys.executable, "-m", "acn", *argv], capture_output=True, text=True)
    _check(proc.returncode, proc.stderr, needle, bad, tmp_path)


def test_the_crafted_pickle_is_a_real_payload(bad, tmp_path):
    """The refusal above proves something only if loading without the guard would run code."""
    assert not (bad / "pwned").exists()
    torch.load(bad / "evil.pt", weights_only=False)  # what an unguarded loader would do
    assert (bad / "pwned").exists()
    (bad / "pwned").unlink()


def test_spaces_and_non_ascii_paths_work(tiny_runs, tmp_path):
    where = tmp_path / "dossier à espaces ü"
    config = where / "réglages.toml"
    where.mkdir()
    config.write_text('[data]\nname = "digits"\nbinarize = true\n', encoding="utf-8")
    run = where / "run é"
    assert main(["train", str(config), *TINY_ARGS, "--out", str(run)]) == 0
    assert main(["eval", str(run), "--samples", "2", "--out", str(where / "é.json")]) == 0
    assert main(["export", str(run), "--out", str(where / "modèle")]) == 0
    assert (
        main(
            [
                "sample",
                str(where / "modèle"),
                "--mode",
                "prior",
                "--num",
                "2",
                "--per-image",
                "2",
                "--out",
                str(where / "échantillon.png"),
            ]
        )
        == 0
    )
    assert (where / "échantillon.png").stat().st_size > 0
