"""The ``acn`` command line: a thin layer over the library.

Errors the user can cause print one line on stderr (``acn: error: ...``) and exit with code 2;
an interrupted training run exits 130 after saving a checkpoint and saying how to resume.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from acn.cli import commands
from acn.data.info import SPLITS
from acn.eval.pools import POOLS
from acn.store.choices import CHECKPOINTS
from acn.version import __version__
from acn.viz.modes import MODES

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line, like every other error."""

    def error(self, message: str):  # noqa: D102
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _without_resume(argv: list[str]) -> list[str]:
    """The command line minus any ``--resume X`` / ``--resume=X``, to print a resume command."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--resume":
            skip = True
        elif not token.startswith("--resume="):
            out.append(token)
    return out


def _integer_at_least(low: int, meaning: str = ""):
    """An argparse type: an integer >= ``low`` (``meaning`` says what ``low`` stands for)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}{meaning}, got {value}")
        return value

    return parse


_at_least_one = _integer_at_least(1)
_at_least_zero = _integer_at_least(0, " (auto)")


def _samples_or_auto(text: str) -> int | str:
    """``auto`` or an integer >= 1."""
    return "auto" if text == "auto" else _at_least_one(text)


def _checkpoint(p) -> None:
    p.add_argument(
        "--checkpoint",
        default="best",
        choices=CHECKPOINTS,
        help="of a run directory: best (lowest validation total, default) or last",
    )


def _threads(p, default: int = 0, why: str = "") -> None:
    p.add_argument(
        "--threads",
        type=_at_least_zero,
        default=default,
        help=f"CPU threads; 0{' (default)' if not default else ''}: the cores no other process "
        f"keeps busy now{why}",
    )


def _process_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        message = f"{text!r} is not a list of integers such as 1,2,4"
        raise argparse.ArgumentTypeError(message) from None
    if counts == (0,):
        return ()
    if min(counts) < 1:
        raise argparse.ArgumentTypeError(f"process counts must be >= 1, got {text!r}")
    return counts


def _add_train(sub) -> None:
    """``acn train``."""
    p = sub.add_parser("train", help="train a model", description="Train a model.")
    p.add_argument(
        "config",
        help="preset name (see `acn config`), a TOML file, or a run's config.json (to rerun it)",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--resume", type=Path, help="checkpoint (or run directory) to continue from")
    p.set_defaults(run=commands.cmd_train)


def _add_demo(sub) -> None:
    """``acn demo``."""
    p = sub.add_parser(
        "demo",
        help="train ACN, VAE and PixelCNN on the digits and compare",
        description="Train ACN and its baselines on the bundled digits, compare on test.",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides for all three")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    _threads(p)
    _checkpoint(p)
    p.set_defaults(run=commands.cmd_demo)


def _add_eval(sub) -> None:
    """``acn eval``."""
    p = sub.add_parser(
        "eval",
        help="compression and classification numbers of a trained run",
        description="Measure a run the way the paper's tables do (see acn.eval.measure for the "
        "precise definition of every number) and write them as JSON.",
    )
    p.add_argument("source", metavar="RUN", type=Path, help="run directory or checkpoint")
    p.add_argument("--split", default="test", choices=SPLITS, help="default: test")
    p.add_argument("--out", required=True, type=Path, help="JSON file to write")
    p.add_argument(
        "--samples", type=_at_least_one, default=100, help="latents z per image (default 100)"
    )
    p.add_argument("--seed", type=int, help="seed for every random draw (default: the run's)")
    p.add_argument(
        "--pool",
        default="split",
        choices=POOLS,
        help="neighbours for nats.kl.k* (default: split); all are reported",
    )
    p.add_argument("--tour-start", type=int, default=0, help="split row the tour starts at")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--batch-size", type=_at_least_one, help="images per batch (default: the run's)")
    p.add_argument("--export-codes", type=Path, metavar="FILE.npz", help="also write codes")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _threads(p)
    _checkpoint(p)
    p.set_defaults(run=commands.cmd_eval)


def _add_reproduce(sub) -> None:
    """``acn reproduce``."""
    p = sub.add_parser(
        "reproduce",
        help="train the paper's models on a dataset and write its three tables",
        description="Train (or reuse) ACN, VAE, PixelCNN and the deconv-decoder ACN and VAE, "
        "evaluate them on the test split, and write Tables 1-3 beside the paper's numbers "
        "to OUT/tables.json and OUT/tables.md.",
    )
    p.add_argument("dataset", help="dataset with DATASET-acn/-vae/-pixelcnn presets (digits)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides for every model")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--samples", type=_at_least_one, default=100, help="latents z per image (default 100)"
    )
    p.add_argument("--seed", type=int, help="evaluation seed (default: each run's)")
    p.add_argument(
        "--seeds",
        type=_at_least_one,
        default=1,
        help="train every model with N seeds (the config's seed and the N - 1 after it) and "
        "report means with standard deviations (default 1)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _threads(p)
    _checkpoint(p)
    p.set_defaults(run=commands.cmd_reproduce)


def _add_ablate(sub) -> None:
    """``acn ablate``."""
    p = sub.add_parser(
        "ablate",
        help="train the ACN with simpler conditional priors and compare them (prior ablation)",
        description="Train (or reuse) the ACN with each conditional prior variant under the same "
        "encoder, decoder, data, budget and seeds, evaluate each as acn reproduce does, time "
        "their training steps side by side, and write OUT/ablation.json and OUT/ablation.md "
        "(means, spreads, and differences from the paper's prior paired by seed).",
    )
    p.add_argument("dataset", help="dataset with a DATASET-acn preset (digits, mnist5k, ...)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides for every run")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--variants",
        help="comma-separated variants (default: all): paper, mlp_gaussian, linear, shift, "
        "random, k1, k20",
    )
    p.add_argument(
        "--seeds", type=_at_least_one, default=3, help="training seeds per variant (default 3)"
    )
    p.add_argument(
        "--samples", type=_at_least_one, default=100, help="latents z per image (default 100)"
    )
    p.add_argument("--seed", type=int, help="evaluation seed (default: each run's)")
    p.add_argument(
        "--time-rounds",
        type=int,
        default=6,
        help="alternating rounds of step timing after training (0 skips it; default 6)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _threads(p)
    _checkpoint(p)
    p.set_defaults(run=commands.cmd_ablate)


def _add_sample(sub) -> None:
    """``acn sample``."""
    p = sub.add_parser(
        "sample",
        help="daydreams, reconstructions, neighbours and samples as a PNG grid",
        description="Draw one sampling protocol of a trained run as a labelled PNG grid, the "
        "real image first in each row. "
        + "; ".join(f"{mode}: {what}" for mode, what in MODES.items())
        + ".",
    )
    p.add_argument("source", metavar="RUN", type=Path, help="run directory or checkpoint")
    p.add_argument("--mode", required=True, choices=MODES, help="the picture to draw")
    p.add_argument("--out", required=True, type=Path, help="PNG file to write")
    p.add_argument(
        "--num", type=_at_least_one, default=8, help="rows (real images), or samples (8)"
    )
    p.add_argument("--steps", type=_at_least_one, default=8, help="daydream steps per chain (8)")
    p.add_argument(
        "--per-image", type=_at_least_one, default=8, help="samples or neighbours per row (8)"
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the images chosen and every draw")
    p.add_argument(
        "--split", default="test", choices=SPLITS, help="where real images come from (test)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    _threads(p)
    _checkpoint(p)
    p.set_defaults(run=commands.cmd_sample)


def _add_map(sub) -> None:
    """``acn map``."""
    p = sub.add_parser(
        "map",
        help="latent maps: PCA and t-SNE PNGs and the TensorBoard projector",
        description="Project a split's codes on their first two principal components and with "
        "t-SNE, coloured by label (OUT/pca.png, OUT/tsne.png), and export codes, labels and "
        "thumbnails for TensorBoard's embedding projector (OUT/projector).",
    )
    p.add_argument("source", metavar="RUN", type=Path, help="run directory or checkpoint")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--split", default="test", choices=SPLITS, help="default: test")
    p.add_argument("--seed", type=int, default=0, help="t-SNE seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    _threads(p)
    _checkpoint(p)
    p.set_defaults(run=commands.cmd_map)


def _add_report(sub) -> None:
    """``acn report``."""
    p = sub.add_parser(
        "report",
        help="an HTML page about one or more runs",
        description="Write OUT/index.html: config, training curves, evaluation tables (from "
        "the acn eval files in each run's folder, side by side), daydreams, reconstructions, "
        "neighbours, samples and latent maps, all embedded; and OUT/projector/ for "
        "TensorBoard's projector.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", type=Path, help="run directories")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seeds the images chosen and every draw")
    p.add_argument(
        "--split", default="test", choices=SPLITS, help="split for real images and maps (test)"
    )
    p.add_argument("--num", type=_at_least_one, default=8, help="rows per picture (8)")
    p.add_argument(
        "--steps", type=_at_least_one, default=8, help="daydream steps and samples per row (8)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    _threads(p)
    _checkpoint(p)
    p.set_defaults(run=commands.cmd_report)


def _add_export(sub) -> None:
    """``acn export``."""
    p = sub.add_parser(
        "export",
        help="write a shareable model folder (config JSON + safetensors, no pickle)",
        description="Write OUT/config.json and OUT/model.safetensors from a run: the model "
        "and its code bank, without optimiser or random states. Load it with "
        "acn.ACN.from_pretrained(OUT).",
    )
    p.add_argument("source", metavar="RUN", type=Path, help="run directory or checkpoint")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--push-to-hub",
        metavar="OWNER/NAME",
        help="also upload the folder to this Hugging Face Hub repo (needs acn[hub] and a login)",
    )
    p.add_argument("--private", action="store_true", help="create the Hub repo private")
    _checkpoint(p)
    p.set_defaults(run=commands.cmd_export)


def _add_compress(sub) -> None:
    """``acn compress``."""
    p = sub.add_parser(
        "compress",
        help="compress images into a file at the model's bound (bits-back along the tour)",
        description="Compress a split of the run's data, an .npz or image files (PNG ...) into "
        "one file: bits-back coding along the greedy tour (ACN), IID bits-back (VAE) or the "
        "PixelCNN's pixels. Prints the size in bits per image and per dimension beside the "
        "model's bounds on the same images. An ACN file decodes to the images in tour order "
        "unless --keep-order.",
    )
    p.add_argument(
        "source", metavar="RUN", type=Path, help="run directory, checkpoint or exported folder"
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument("--split", choices=SPLITS, help="a split of the run's data (default: test)")
    what.add_argument(
        "--images",
        type=Path,
        nargs="+",
        metavar="PATH",
        help="one .npz ('images': integer levels, (N, C, H, W) or (N, H, W)), or image files "
        "and folders, read as they are (two levels: pixels 0 / 255 or 0 / 1; docs/codec.md)",
    )
    p.add_argument("--out", required=True, type=Path, help="the compressed file (.acnz)")
    _coding_options(p)
    p.add_argument(
        "--samples",
        type=_samples_or_auto,
        default="auto",
        help="latents per image for the bounds printed beside the size (default auto: 100 up "
        "to 500 images, then fewer, 1 from 50,000, so the bound costs about 50,000 decoder "
        "passes)",
    )
    p.add_argument("--json", type=Path, help="also write the summary as JSON")
    _checkpoint(p)
    _threads(
        p,
        default=1,
        why="; default 1: a step's few images code faster on one thread than on two "
        "(docs/results.md), and the file records the count for its decoder",
    )
    p.set_defaults(run=commands.cmd_compress)


def _coding_options(p) -> None:
    """How ``acn compress`` codes: order, seeds, segments, parts, soft tour, exact arithmetic."""
    p.add_argument(
        "--keep-order", action="store_true", help="also code the images' order (log N! nats)"
    )
    p.add_argument(
        "--seeds",
        type=_at_least_one,
        default=1,
        help="dither seeds to try, keeping the smallest file (default 1)",
    )
    p.add_argument(
        "--segments",
        type=_at_least_one,
        default=None,
        help="segments decoded side by side in one batch (default: as many as keep the "
        "ACN's segment heads within 0.2%% of the file; a VAE's or PixelCNN's, up to 1,024)",
    )
    p.add_argument(
        "--parts",
        type=_at_least_one,
        default=None,
        help="independent stacks, decoded by one process each (default: 2 where the file is "
        "large enough that the second costs at most 0.1%%, else 1; at most 64)",
    )
    p.add_argument(
        "--soft-tour",
        action="store_true",
        help="ACN: choose each image's tour predecessor among its 32 nearest with bits back "
        "(a set, below the ordered bound; format 5; not with --keep-order)",
    )
    p.add_argument(
        "--exact",
        action="store_true",
        help="compute every probability in integer arithmetic: the file decodes on any "
        "machine, thread count or device (docs/codec.md)",
    )


def _add_decompress(sub) -> None:
    """``acn decompress``."""
    p = sub.add_parser(
        "decompress",
        help="decode an acn compress file back to images",
        description="Decode FILE with the model that made it and write its images to OUT: "
        "an .npz whose 'images' array holds uint8 levels, (N, C, H, W), where OUT ends in "
        ".npz; else a folder of PNG files named by position (0.png ..., zero-padded), binary "
        "images as 0 / 255.",
    )
    p.add_argument("file", metavar="FILE", type=Path, help="a file written by acn compress")
    p.add_argument("--model", required=True, type=Path, help="the run or exported folder")
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="an .npz, or a folder for PNG files (new, or empty)",
    )
    p.add_argument(
        "--workers",
        type=_at_least_one,
        default=None,
        help="processes decoding a file's parts side by side (default: one per part, at most "
        "one per free core)",
    )
    _checkpoint(p)
    p.set_defaults(run=commands.cmd_decompress)


def _add_config(sub) -> None:
    """``acn config``."""
    p = sub.add_parser(
        "config",
        help="list presets, or print a resolved config",
        description="Without CONFIG, list presets; with it, print the resolved config.",
    )
    p.add_argument("config", nargs="?", help="preset name or TOML path")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(run=commands.cmd_config)


def _add_bench(sub) -> None:
    """``acn bench``."""
    p = sub.add_parser(
        "bench",
        help="measure step, sampling, k-NN and scaling speed",
        description="Benchmarks measured side by side in one run.",
    )
    p.add_argument("--out", help="also write the results as JSON")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument(
        "--no-large",
        action="store_true",
        help="skip the N=1,281,167 searches and the 28x28 decoding",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument(
        "--processes",
        type=_process_counts,
        default=(1, 2),
        help="process counts for the scaling measurement, e.g. 1,2,4 (0 skips it; default 1,2)",
    )
    p.add_argument(
        "--no-load",
        action="store_true",
        help="skip the thread settings timed idle and beside a competing process",
    )
    p.add_argument(
        "--codec",
        metavar="RUN",
        action="append",
        type=Path,
        help="also compress this trained run's test split with acn compress, beside gzip, bz2, "
        "xz, PNG and JBIG (repeatable)",
    )
    p.add_argument(
        "--codec-scale",
        metavar="RUN",
        type=Path,
        help="also compress and decompress a whole data set with this run's model: every image "
        "of its data, 12 copies each with 3 pixels flipped (mnist5k: 60,000), bit-exact, with "
        "wall time and peak memory (python -m acn.experiments.bench_scale for other sizes)",
    )
    p.set_defaults(run=commands.cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``acn`` and its sub-commands."""
    parser = _Parser(prog="acn", description="Associative Compression Networks.")
    parser.add_argument("--version", action="version", version=f"acn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    for add in (
        _add_train,
        _add_demo,
        _add_eval,
        _add_reproduce,
        _add_ablate,
        _add_sample,
        _add_map,
        _add_report,
        _add_export,
        _add_compress,
        _add_decompress,
        _add_config,
        _add_bench,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``acn`` console script and ``python -m acn``."""
    from acn.errors import AcnError, TrainingInterrupted

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if getattr(args, "threads", None) is not None:
            from acn import threads  # imports torch: only commands that compute have --threads

            args.threads = threads.use(args.threads)
        return args.run(args)
    except AcnError as exc:
        from acn.launch import launched_rank

        rank = launched_rank()  # None for one process; under torchrun each rank reports
        if isinstance(exc, TrainingInterrupted):
            if not rank:  # every rank stopped at the same step; rank 0 speaks for them
                again = " ".join(shlex.quote(a) for a in _without_resume(argv or sys.argv[1:]))
                print(
                    f"acn: {exc}\nresume with: acn {again} "
                    f"--resume {shlex.quote(str(exc.checkpoint))}"
                    + ("" if rank is None else " (via torchrun, any number of processes)"),
                    file=sys.stderr,
                )
            return EXIT_INTERRUPTED
        who = "" if rank is None else f"[rank {rank}] "
        print(f"acn: error: {who}{exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"acn: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("acn: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
