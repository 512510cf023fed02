"""The command line, end to end, through real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import forked
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
ACN = [sys.executable, "-m", "acn"]


# One intra-op thread, as in-process tests pin it: tiny models run faster on it and do not spin
# against the other processes of a busy machine. Every process of one comparison gets the same.
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run(args, **kw):
    env = ENV
    return subprocess.run([*ACN, *args], capture_output=True, text=True, env=env, **kw)


def _one_clear_line(proc, needle):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and needle in lines[0], lines[0]


def test_train_contract_and_python_dash_m(tmp_path, tiny_overrides):
    out = tmp_path / "run dir é"  # spaces and non-ASCII must simply work
    proc = run(["train", "digits-acn", *tiny_overrides, "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "validation KL" in proc.stdout
    assert json.loads((out / "config.json").read_text())["train"]["steps"] == 6
    assert (out / "metrics.jsonl").read_text().count("\n") >= 3
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert {"config", "step", "model"} <= set(state) and state["step"] == 6


def test_console_script_matches_module(tmp_path):
    script = Path(sys.executable).with_name("acn")
    proc = subprocess.run([str(script), "config", "digits-vae"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"]["prior"] == "normal"
    assert run(["config", "digits-vae"]).stdout == proc.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["train", "digits-acn", "train.lr=abc", "--out", "{tmp}/r"],
            "train.lr: expected a number",
        ),
        (["train", "digits-acn", "model.prior=vq", "--out", "{tmp}/r"], "choose one of"),
        (["train", "digits-acn", "codebank.k=5000", "--out", "{tmp}/r"], "codebank.k=5000"),
        (["train", "nope-preset", "--out", "{tmp}/r"], "unknown preset"),
        (["train", "{tmp}/missing.toml", "--out", "{tmp}/r"], "config file not found"),
        (["train", "digits-acn", "--out", "{tmp}/r", "--resume", "{tmp}/none.pt"], "not found"),
        (
            ["train", "digits-acn", "--out", "{tmp}/r", "--resume", "{tmp}/junk.pt"],
            "not a readable checkpoint",
        ),
        (["train", "digits-acn"], "--out"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_errors_are_one_line_exit_2(tmp_path, args, needle):
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    proc = run([a.replace("{tmp}", str(tmp_path)) for a in args])
    _one_clear_line(proc, needle)
    assert not (tmp_path / "r" / "checkpoints" / "last.pt").exists()


def test_unwritable_run_dir(tmp_path, tiny_overrides):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run(["train", "digits-acn", *tiny_overrides, "--out", str(blocker / "run")])
    _one_clear_line(proc, "cannot write to run directory")


def test_sigterm_saves_and_resume_matches_uninterrupted(tmp_path, tiny_overrides):
    # Forked processes (tests/forked.py): real processes and a real SIGTERM, without each one
    # importing torch afresh. The uninterrupted run trains beside the one that is stopped.
    long = [
        *tiny_overrides,
        "train.steps=200",
        "train.checkpoint_every=1000",
        "train.log_every=10",
        "train.eval_every=0",
    ]
    full = forked.Command(
        ["train", "digits-acn", *long, "--out", tmp_path / "full"], tmp_path / "l1"
    )
    out = tmp_path / "stopped"
    proc = forked.Command(["train", "digits-acn", *long, "--out", out], tmp_path / "l2")
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (
        metrics.exists() and metrics.read_text().count("\n") >= 2
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "SIGTERM received" in err and "resume with: acn train" in err
    step = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert 20 <= step < 200
    resume = ["train", "digits-acn", *long, "--out", out, "--resume", out]
    resumed = forked.run(resume, tmp_path / "l3")
    assert resumed.returncode == 0, resumed.stderr
    _, err = full.communicate(timeout=300)
    assert full.returncode == 0, err
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert (tmp_path / "full" / "metrics.jsonl").read_text() == metrics.read_text()


def test_readme_commands_are_the_ones_ci_and_tests_run():
    readme = (ROOT / "README.md").read_text()
    assert "./dev demo" in readme and "./dev test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./dev test" in ci


@pytest.mark.slow
def test_readme_demo_command_runs_end_to_end(tmp_path):
    """The README's demo command, exactly, on a fresh output folder; then acn reproduce on it."""
    started = time.perf_counter()
    # The same command, pointed at a fresh folder so that earlier demo runs are not reused.
    out = tmp_path / "demo"
    proc = subprocess.run(
        ["./dev", "demo", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["preset"]: r for r in summary["rows"]}
    assert set(rows) == {"digits-acn", "digits-vae", "digits-pixelcnn"}
    assert rows["digits-pixelcnn"]["kl_nats"] == 0
    for r in rows.values():
        assert r["recon_nats"] > 0 and r["total_nats"] == pytest.approx(
            r["kl_nats"] + r["recon_nats"]
        )
    assert "| ACN |" in proc.stdout
    assert f"report: {(out / 'report' / 'index.html').resolve()}" in proc.stdout
    assert (out / "report" / "index.html").stat().st_size > 10_000
    print(f"demo wall time {time.perf_counter() - started:.0f} s")

    # acn reproduce at the full digits budget, pointed at the demo folder: the demo's three runs
    # are reused (checkpoints untouched), the two deconv runs trained, all five evaluated.
    stamps = {p: (out / p / "checkpoints" / "last.pt").stat().st_mtime_ns for p in rows}
    started = time.perf_counter()
    proc = run(["reproduce", "digits", "--out", str(out), "--no-progress"], timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p: (out / p / "checkpoints" / "last.pt").stat().st_mtime_ns for p in rows} == stamps
    tables = json.loads((out / "tables.json").read_text())
    for table in ("table1", "table2", "table3"):
        assert all(isinstance(v, float) for v in tables[table].values()), tables[table]
    assert tables["table1"]["pixelcnn"] == pytest.approx(rows["digits-pixelcnn"]["total_nats"])
    assert "## Table 2" in proc.stdout
    print(f"reproduce wall time (demo runs reused) {time.perf_counter() - started:.0f} s")
