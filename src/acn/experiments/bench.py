"""Benchmarks measured side by side in one run, reported as absolute times and ratios.

- The ACN training step against the VAE step with the same encoder, decoder and batch: the two
  models are timed in alternating rounds, so that drift in the machine's speed hits both alike,
  and the ratio of medians is reported (the code bank and prior's share of the step).
- Images per second: training (from those steps) and sampling: the PixelCNN's cached incremental
  decoding against a full pass per pixel, at 8x8 and 28x28 (:mod:`acn.experiments.bench_decoding`).
- The code bank's exact k-NN search (B = 128 queries, k = 5, self excluded) against bank size N
  and code dimension D, for each back-end, FAISS included when installed
  (:mod:`acn.experiments.bench_knn`).
- Data-parallel scaling efficiency over 1, 2, ... processes (:mod:`acn.experiments.bench_scaling`).
- Step and sampling times under torch's thread default and the library's, on the machine as it
  is and beside a competing CPU-bound process (:mod:`acn.experiments.bench_threads`).
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any

import torch

from acn.config import Config, load_config
from acn.data.datasets import load_splits
from acn.model import ACN

# The two reference shapes (MNIST-sized D = 16, ImageNet-sized D = 128) and the two
# crossings, so that time can be read against N and D separately.
KNN_SHAPES = ((60_000, 16), (60_000, 128), (1_281_167, 16), (1_281_167, 128))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_timer(config: Config, device: torch.device):
    """Timers of one training step and of the code bank's share of it, for ``config``'s model
    on its own training data: ``(step(i), batch size, bank(i))``, each returning seconds. The
    step runs under ``train.precision`` as training does (bf16 autocast or float32)."""
    from acn.train.parallel import autocast, use_bf16

    bf16 = use_bf16(config.train.precision, device)
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
        with autocast(bf16, device):
            terms = model(x, index=index, generator=generator, update_bank=True)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        optimizer.step()
        _sync(device)
        return time.perf_counter() - start

    @torch.no_grad()
    def bank(i: int) -> float:
        """The code bank's share of a step: the neighbour draw and the update."""
        index = ((torch.arange(b) + i * b) % n).to(device)
        c = model.encode(images[index])
        _sync(device)
        start = time.perf_counter()
        model.bank.draw(c, model.k, index, generator)
        model.bank.write(index, c)
        _sync(device)
        return time.perf_counter() - start

    return step, config.train.batch_size, bank


def bench_steps(rounds: int, per_round: int, device: torch.device) -> dict[str, Any]:
    """Median step time of ACN and VAE on the digits presets, timed in alternating rounds."""
    acn, batch, bank = step_timer(load_config("digits-acn"), device)
    vae, _, _ = step_timer(load_config("digits-vae"), device)
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
    bank_ms = 1000 * statistics.median(bank(i) for i in range(rounds * per_round))
    return {
        "batch_size": batch,
        "acn_step_ms": acn_ms,
        "vae_step_ms": vae_ms,
        "step_ratio_acn_over_vae": acn_ms / vae_ms,
        # What the ACN adds is the bank (search, draw, update) and the prior network; the bank's
        # part is timed alone so that the two can be told apart.
        "bank_ms": bank_ms,
        "bank_share_of_acn_step": bank_ms / acn_ms,
        "train_images_per_s_acn": batch / acn_ms * 1000,
    }


# The presets whose training step bench_precision times in float32 and under bf16 autocast.
PRECISION_PRESETS = ("digits-acn", "mnist5k-acn")


def bench_precision(
    rounds: int,
    per_round: int,
    device: torch.device,
    presets: tuple[str, ...] = PRECISION_PRESETS,
    overrides: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Median training step of each preset in float32 and in bf16 autocast, timed in
    alternating rounds (the ratio is what bf16 buys on this device)."""
    from acn.runtime import cpu_native_bf16

    records = []
    for preset in presets:
        timers = {
            p: step_timer(load_config(preset, [*overrides, f"train.precision={p}"]), device)[0]
            for p in ("float32", "bf16")
        }
        for fn in timers.values():
            for i in range(3):  # warm-up
                fn(i)
        times: dict[str, list[float]] = {p: [] for p in timers}
        order = list(timers)
        for r in range(rounds):
            for p in order if r % 2 == 0 else order[::-1]:
                times[p] += [timers[p](r * per_round + i) for i in range(per_round)]
        fp32, bf16 = (1000 * statistics.median(times[p]) for p in ("float32", "bf16"))
        records.append(
            {
                "preset": preset,
                "float32_step_ms": fp32,
                "bf16_step_ms": bf16,
                "speedup_bf16": fp32 / bf16,
                "native_bf16": cpu_native_bf16() if device.type == "cpu" else None,
            }
        )
    return records


def run_bench(
    quick: bool = False,
    large: bool = True,
    device: str | None = None,
    processes: tuple[int, ...] = (1, 2),
    load: bool = True,
    codec: list[str] | None = None,
    codec_scale: str | None = None,
) -> dict[str, Any]:
    """Run the benchmarks; returns a JSON-ready dict (see :func:`format_report`).

    Args:
        quick: fewer repetitions (a smoke run; the numbers are noisier).
        large: include the N = 1,281,167 banks (a few seconds per search on a CPU), the 28x28
            decoder and the 28x28 daydream.
        device: ``cpu`` or ``cuda`` (default: CUDA when available).
        processes: the process counts of the scaling measurement (empty: skip it).
        load: time the thread settings idle and beside a competing process (fresh processes,
            a minute or more; :mod:`acn.experiments.bench_threads`).
        codec: trained runs whose test split the codec compresses, beside gzip, bz2, xz, PNG
            and JBIG (:mod:`acn.experiments.bench_codec`); the codec needs a trained model, so
            without runs the ``codec`` record is empty.
        codec_scale: a trained run whose whole data set, twelve times over with flipped
            pixels, the codec compresses and decompresses (:mod:`acn.experiments.bench_scale`;
            the ``codec_scale`` record, None without it).
    """
    from acn.experiments.bench_decoding import daydream_record, decoding_records
    from acn.experiments.bench_knn import knn_records
    from acn.experiments.bench_scaling import scaling
    from acn.experiments.bench_threads import thread_records

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    report: dict[str, Any] = {
        "device": str(dev),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    report.update(bench_steps(rounds=4 if quick else 10, per_round=5 if quick else 10, device=dev))
    report["precision"] = (
        bench_precision(2 if quick else 6, 3 if quick else 5, dev) if large else []
    )
    report["decoding"] = decoding_records(dev, quick, large)
    digits = next(r for r in report["decoding"] if (r["image"], r["batch"]) == ("8x8", 64))
    report["sample_batch"], report["sample_ms"] = 64, 1000 * digits["cached_s"]
    report["sample_images_per_s"] = digits["cached_images_per_s"]
    report["daydream"] = daydream_record(dev) if large and not quick else None
    shapes = [s for s in KNN_SHAPES if large or s[0] < 1_000_000]
    report["knn"] = knn_records(shapes, queries=128, k=5, repeats=3 if quick else 7, device=dev)
    report["scaling"] = (
        scaling(processes, steps=5 if quick else 20, device=dev.type) if processes else []
    )
    workloads = ("train8", "train28", "sample8", "sample28") if large else ("train8", "sample8")
    report["load"] = thread_records(workloads=workloads, quick=quick) if load else []
    if codec:
        from acn.experiments.bench_codec import bench_codec

        report["codec"] = [bench_codec(run, seeds=2 if quick else 4) for run in codec]
    else:
        report["codec"] = []
    report["codec_scale"] = None
    if codec_scale:
        from acn.experiments.bench_scale import bench_scale

        report["codec_scale"] = bench_scale(codec_scale, copies=2 if quick else 12)
    return report


def _format_precision(records: list[dict[str, Any]]) -> list[str]:
    if not records:
        return []
    native = records[0]["native_bf16"]
    lines = [f"train step, float32 against bf16 autocast (native bf16: {native}):"]
    for r in records:
        lines.append(
            f"  {r['preset']:12s} float32 {r['float32_step_ms']:8.2f} ms   bf16 "
            f"{r['bf16_step_ms']:8.2f} ms   speed-up {r['speedup_bf16']:.2f}x"
        )
    return [*lines, ""]


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of a :func:`run_bench` report."""
    from acn.experiments.bench_decoding import format_decoding

    lines = [
        f"device {report['device']}, torch {report['torch']}, {report['threads']} threads",
        "",
        f"train step (digits presets, batch {report['batch_size']}, alternating rounds):",
        f"  ACN {report['acn_step_ms']:8.2f} ms   VAE {report['vae_step_ms']:8.2f} ms   "
        f"ratio ACN/VAE {report['step_ratio_acn_over_vae']:.3f}",
        f"  of which the code bank (k-NN, draw, update): {report['bank_ms']:.2f} ms, "
        f"{100 * report['bank_share_of_acn_step']:.1f}% of the ACN step; the rest is the prior",
        f"  training: ACN {report['train_images_per_s_acn']:.0f} images/s",
        f"  sampling: {report['sample_images_per_s']:.1f} images/s "
        f"(batch {report['sample_batch']}, {report['sample_ms']:.0f} ms)",
        "",
        *_format_precision(report.get("precision") or []),
        *format_decoding(report["decoding"], report["daydream"]),
        "",
        "exact k-NN, B queries, self excluded (ratio: time over FAISS IndexFlatL2's):",
    ]
    reference = {
        (r["N"], r["D"]): r["ms"] for r in report["knn"] if r["backend"] == "faiss-IndexFlatL2"
    }
    for r in report["knn"]:
        ref = reference.get((r["N"], r["D"]))
        ratio = f"{r['ms'] / ref:6.2f}x" if ref else ""
        lines.append(
            f"  {r['backend']:22s} N={r['N']:>9,d} D={r['D']:>3d} B={r['B']} k={r['k']}: "
            f"{r['ms']:9.2f} ms {ratio}"
        )
    if report.get("load"):
        from acn.experiments.bench_threads import format_threads

        lines += ["", *format_threads(report["load"])]
    if report.get("codec_scale"):
        from acn.experiments.bench_scale import format_scale

        lines += ["", "codec on a whole data set:", format_scale(report["codec_scale"])]
    if report.get("codec"):
        from acn.experiments.bench_codec import format_codec

        for record in report["codec"]:
            lines += ["", "codec (acn compress) against classic compressors:", format_codec(record)]
    if report.get("scaling"):
        lines += ["", "data-parallel scaling (same batch per process):"]
        for r in report["scaling"]:
            lines.append(
                f"  {r['processes']} process(es) x batch {r['batch_per_process']}: "
                f"{r['step_ms']:8.2f} ms/step, {r['images_per_s']:8.0f} images/s, "
                f"efficiency {r['efficiency']:.2f}"
            )
    return "\n".join(lines)
