"""The soft tour measured (``python -m acn.experiments.bench_soft RUN [--seeds 2]
[--sizes 1000,4000,16000] [--no-files]``):

- **its saving**: on the run's split, each seed's soft-tour file against the greedy tour's file
  of the same seed (exact path unless ``--float``), in bits per image, beside the ceiling
  log2 N!/N, with both files' encode and decode times; and the share of the whole-set soft-min
  (format 4's choice, over every image) that the 32 nearest hold (:func:`mass_near`);
- **its own work against N**: the scores (codes and tables of every image) and the choices,
  popped by an encoder and pushed back by a decoder along one chain of N images made of the
  run's data (:func:`acn.experiments.bench_scale.flipped_copies`), timed and checked
  (the stack comes back to its bytes). Everything else a soft-tour file does (the latents and
  pixels) is the greedy file's work, measured by ``acn bench --codec-scale``; the greedy tour
  it skips is measured by ``python -m acn.experiments.bench_tour``.

Take the times with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time

import numpy as np
import torch

from acn.codec import decompress, encode, softtour
from acn.codec.ans import Stack
from acn.codec.files import DEFAULT_DELTA, networks
from acn.eval.load import load_run
from acn.experiments.bench_scale import flipped_copies

LN2 = math.log(2)


def soft_saving(model, images: np.ndarray, seeds: int, exact: bool = True) -> dict:
    """Each seed's greedy and soft-tour files (both decoded and compared), in bits per image."""
    n = len(images)
    rows: dict[str, list[float]] = {k: [] for k in ("greedy", "soft")}
    seconds: dict[str, list[float]] = {f"{k}_{s}": [] for k in rows for s in ("encode", "decode")}
    for seed in range(seeds):
        for name, soft in (("greedy", False), ("soft", True)):
            start = time.perf_counter()
            made = encode(
                model, images, seeds=1, first_seed=seed, exact=exact, soft_tour=soft, verify=False
            )
            seconds[f"{name}_encode"].append(time.perf_counter() - start)
            start = time.perf_counter()
            back = decompress(model, made.data)
            seconds[f"{name}_decode"].append(time.perf_counter() - start)
            if not np.array_equal(back, images[made.order]):
                raise AssertionError(f"the {name} file did not decode to the images")
            rows[name].append(8 * len(made.data) / n)
    saving = np.array(rows["greedy"]) - np.array(rows["soft"])
    return {
        "num_images": n,
        "exact": exact,
        "greedy_bits_per_image": rows["greedy"],
        "soft_bits_per_image": rows["soft"],
        "saving_bits_per_image": saving.tolist(),
        "saving_mean": float(saving.mean()),
        "saving_std": float(saving.std(ddof=1)) if seeds > 1 else 0.0,
        "ceiling_bits_per_image": math.lgamma(n + 1) / LN2 / n,
        "seconds_median": {k: float(np.median(v)) for k, v in seconds.items()},
    }


def mass_near(net, x: np.ndarray, k: int | None = None) -> dict:
    """How much of the whole-set soft-min lies in each image's ``k`` nearest others (the
    candidates of format 5; format 4 scored them all): for every image as chooser, the share of
    sum_y exp(-KL(Q_x || P_y)) over all other distinct images held by its k nearest codes."""
    k = k or softtour.CANDIDATES
    scores = softtour.scores_of(net, x)
    keys = {x[i].tobytes(): i for i in range(len(x))}
    rows = np.array(sorted(keys.values()))  # one row per distinct image
    codes = scores.codes[rows]
    shares = []
    for i in rows:
        others = rows[rows != i]
        kl = scores.kl_units(i, scores.ln_p[others]) / 2**12
        w = np.exp(-(kl - kl.min()))
        d = ((codes[rows != i] - scores.codes[i]) ** 2).sum(axis=1)
        near = np.argsort(d, kind="stable")[:k]
        shares.append(w[near].sum() / w.sum())
    shares = np.array(shares)
    return {
        "k": k,
        "mean_share": float(shares.mean()),
        "p05_share": float(np.quantile(shares, 0.05)),
        "min_share": float(shares.min()),
    }


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def choice_work(net, x: np.ndarray, seed: int = 0) -> dict:
    """The soft tour's own work on the set ``x``: scores, then N - 1 choices popped along one
    chain (each chosen image chooses the next) and pushed back by a growing pool."""
    n = len(x)
    keys = [image.tobytes() for image in x]
    start = time.perf_counter()
    scores = softtour.scores_of(net, x)
    scores_s = time.perf_counter() - start
    stack = Stack()
    rng = np.random.default_rng(seed)
    stack.push_uniform(rng.integers(0, 1 << 16, 4 * n + 64), np.full(4 * n + 64, 1 << 16))
    before = stack.to_bytes()
    rows_of: dict[bytes, list[int]] = {}
    pool = softtour.NearPool(scores.codes.shape[1], scores.ln_p.shape[1], n)
    for i in range(n):
        rows_of.setdefault(keys[i], []).append(i)
        pool.add(keys[i], scores.codes[i], scores.ln_p[i])
    offsets = softtour.offsets(seed, 0, n)
    chain = [rows_of[keys[0]][0]]  # the chain's last image: the set's first
    pool.remove(keys[0])
    start = time.perf_counter()
    for t in range(n - 1):
        key = softtour.pop_choice(stack, pool, scores, chain[-1], offsets[t])
        chain.append(rows_of[key][0])
    encode_s = time.perf_counter() - start
    back = softtour.NearPool(scores.codes.shape[1], scores.ln_p.shape[1], n)
    start = time.perf_counter()
    for t in reversed(range(n - 1)):
        row = chain[t + 1]
        back.add(keys[row], scores.codes[row], scores.ln_p[row])
        softtour.push_choice(stack, back, keys[row], scores, chain[t], offsets[t])
    decode_s = time.perf_counter() - start
    if stack.to_bytes() != before:
        raise AssertionError("the choices' bits did not come back")
    held = sum(a.nbytes for a in (scores.codes, scores.q, scores.q_ln_q, scores.ln_p))
    held += sum(a.nbytes for a in (pool.codes, pool.norms, pool.ln_p, pool.copies))
    return {
        "num_images": n,
        "dim": int(scores.codes.shape[1]),
        "table_width": int(scores.ln_p.shape[1]),
        "scores_seconds": scores_s,
        "encoder_choices_seconds": encode_s,
        "decoder_choices_seconds": decode_s,
        "arrays_mib": held / 2**20,
        "peak_mib": _peak_mib(),
    }


def bench_soft(
    source: str,
    *,
    seeds: int = 2,
    split: str = "test",
    sizes: tuple[int, ...] = (),
    exact: bool = True,
    files: bool = True,
    threads: int = 1,
) -> dict:
    torch.set_num_threads(threads)
    run = load_run(source, device="cpu")
    model = run.model
    if model.kind != "acn":
        raise ValueError(f"the soft tour needs an ACN run, not a {model.kind}")
    report: dict = {"source": str(source), "split": split, "threads": threads}
    if files:
        images = run.splits[split].images.numpy().astype(np.uint8)
        report["saving"] = soft_saving(model, images, seeds, exact)
        with torch.no_grad():
            report["mass_near"] = mass_near(networks(model, DEFAULT_DELTA, exact), images)
    if sizes:
        base = np.concatenate([s.images.numpy() for s in run.splits.values()]).astype(np.uint8)
        net = networks(model, DEFAULT_DELTA, exact)
        work = []
        for size in sizes:
            copies = -(-size // len(base))
            x = flipped_copies(base, copies, 3, model.info.levels)[:size]
            with torch.no_grad():
                work.append(choice_work(net, x))
        report["work"] = work
    return report


def format_soft(report: dict) -> str:
    lines = []
    saving = report.get("saving")
    if saving:
        s = saving["seconds_median"]
        lines += [
            f"{report['source']}, {report['split']} split ({saving['num_images']} images), "
            f"{'exact' if saving['exact'] else 'float'} path, {len(saving['soft_bits_per_image'])} "
            "seeds",
            f"  greedy tour's file {np.mean(saving['greedy_bits_per_image']):.2f} bits per image, "
            f"soft tour's {np.mean(saving['soft_bits_per_image']):.2f}: saves "
            f"{saving['saving_mean']:.2f} +- {saving['saving_std']:.2f} bits per image "
            f"(ceiling log2 N!/N = {saving['ceiling_bits_per_image']:.2f})",
            f"  encode {s['greedy_encode']:.1f} s greedy, {s['soft_encode']:.1f} s soft; decode "
            f"{s['greedy_decode']:.1f} s greedy, {s['soft_decode']:.1f} s soft (medians)",
        ]
    near = report.get("mass_near")
    if near:
        lines.append(
            f"  share of the whole-set soft-min in the {near['k']} nearest: mean "
            f"{near['mean_share']:.4f}, 5th percentile {near['p05_share']:.4f}, least "
            f"{near['min_share']:.4f}"
        )
    work = report.get("work")
    if work:
        lines += [
            "",
            "| N | scores s | encoder choices s | decoder choices s | arrays MiB | peak MiB |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for w in work:
            lines.append(
                f"| {w['num_images']:,} | {w['scores_seconds']:.1f} | "
                f"{w['encoder_choices_seconds']:.1f} | {w['decoder_choices_seconds']:.1f} | "
                f"{w['arrays_mib']:.0f} | {w['peak_mib']:.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--split", default="test")
    parser.add_argument("--sizes", default="", help="comma-separated N for the work table")
    parser.add_argument("--float", action="store_true", help="the float path, not the exact")
    parser.add_argument("--no-files", action="store_true", help="skip the files' saving")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    sizes = tuple(int(v) for v in args.sizes.split(",") if v)
    report = bench_soft(
        args.run,
        seeds=args.seeds,
        split=args.split,
        sizes=sizes,
        exact=not args.float,
        files=not args.no_files,
        threads=args.threads,
    )
    print(format_soft(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
