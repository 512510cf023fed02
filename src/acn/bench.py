"""Benchmarks measured side by side in one run, reported as absolute times and ratios.

- The ACN training step against the VAE step with the same encoder, decoder and batch: the two
  models are timed in alternating rounds, so that drift in the machine's speed hits both alike,
  and the ratio of medians is reported.
- The code bank's exact k-NN search (B queries, K = 5, self excluded) against bank size N and
  code dimension D.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any

import torch

from acn.codebank import CodeBank
from acn.config import load_config
from acn.data import load_splits
from acn.model import ACN

KNN_SHAPES = ((60_000, 16), (1_281_167, 128))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_timer(preset: str, overrides: list[str], device: torch.device):
    config = load_config(preset, overrides)
    splits, info = load_splits(config.data, config.seed)
    torch.manual_seed(0)
    model = ACN(config, info, len(splits["train"])).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    generator = torch.Generator(device=device).manual_seed(0)
    n, b = len(splits["train"]), config.train.batch_size
    images = splits["train"].images.to(device)

    def step(i: int) -> float:
        index = (torch.arange(b) + i * b) % n
        x, index = images[index.to(device)], index.to(device)
        _sync(device)
        start = time.perf_counter()
        terms = model(x, index=index, generator=generator, update_bank=True)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        optimizer.step()
        _sync(device)
        return time.perf_counter() - start

    return step, config.train.batch_size


def bench_steps(rounds: int, per_round: int, device: torch.device) -> dict[str, Any]:
    """Median step time of ACN and VAE on the digits presets, timed in alternating rounds."""
    acn, batch = _step_timer("digits-acn", [], device)
    vae, _ = _step_timer("digits-vae", [], device)
    for i in range(3):  # warm-up
        acn(i), vae(i)
    times: dict[str, list[float]] = {"acn": [], "vae": []}
    for r in range(rounds):
        for name, fn in (
            (("acn", acn), ("vae", vae)) if r % 2 == 0 else (("vae", vae), ("acn", acn))
        ):
            times[name] += [fn(r * per_round + i) for i in range(per_round)]
    acn_ms = 1000 * statistics.median(times["acn"])
    vae_ms = 1000 * statistics.median(times["vae"])
    return {
        "batch_size": batch,
        "acn_step_ms": acn_ms,
        "vae_step_ms": vae_ms,
        "step_ratio_acn_over_vae": acn_ms / vae_ms,
        "train_images_per_s_acn": batch / acn_ms * 1000,
    }


def bench_knn(
    num_codes: int, dim: int, queries: int, repeats: int, device: torch.device, k: int = 5
) -> dict[str, Any]:
    """Median time of one batched exact k-NN search (self excluded) over a random bank."""
    g = torch.Generator().manual_seed(0)
    bank = CodeBank(num_codes, dim, generator=g).to(device)
    index = torch.randint(num_codes, (queries,), generator=g).to(device)
    q = bank.codes[index] + 0.1 * torch.randn(queries, dim, generator=g).to(device)
    bank.knn(q, k, exclude=index)  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        bank.knn(q, k, exclude=index)
        _sync(device)
        times.append(time.perf_counter() - start)
    return {
        "backend": f"torch-{device.type}",
        "N": num_codes,
        "D": dim,
        "B": queries,
        "k": k,
        "ms": 1000 * statistics.median(times),
    }


def run_bench(quick: bool = False, large: bool = True, device: str | None = None) -> dict[str, Any]:
    """Run the benchmarks; returns a JSON-ready dict (see :func:`format_report`)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    report: dict[str, Any] = {
        "device": str(dev),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    report.update(bench_steps(rounds=4 if quick else 10, per_round=5 if quick else 10, device=dev))
    shapes = KNN_SHAPES if large else KNN_SHAPES[:1]
    report["knn"] = [bench_knn(n, d, 128, 3 if quick else 10, dev) for n, d in shapes]
    return report


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of a :func:`run_bench` report."""
    lines = [
        f"device {report['device']}, torch {report['torch']}, {report['threads']} threads",
        "",
        f"train step (digits presets, batch {report['batch_size']}):",
        f"  ACN {report['acn_step_ms']:8.2f} ms   VAE {report['vae_step_ms']:8.2f} ms   "
        f"ratio ACN/VAE {report['step_ratio_acn_over_vae']:.3f}",
        f"  ACN training throughput {report['train_images_per_s_acn']:.0f} images/s",
        "",
        "exact k-NN (self excluded):",
    ]
    for r in report["knn"]:
        lines.append(
            f"  {r['backend']:10s} N={r['N']:>9,d} D={r['D']:>3d} B={r['B']} k={r['k']}: "
            f"{r['ms']:9.2f} ms"
        )
    return "\n".join(lines)
