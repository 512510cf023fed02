"""The ``acn`` command line: a thin layer over the library.

Errors the user can cause print one line on stderr (``acn: error: ...``) and exit with code 2;
an interrupted training run exits 130 after saving a checkpoint and saying how to resume.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from acn import __version__

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line, like every other error."""

    def error(self, message: str):  # noqa: D102
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _cmd_train(args) -> int:
    from acn.config import load_config
    from acn.training import train

    config = load_config(args.config, args.overrides)
    summary = train(config, args.out, resume=args.resume)
    val = summary["val"]
    if val:
        print(
            f"step {summary['step']}: validation KL {val['kl_nats']:.2f}, reconstruction "
            f"{val['recon_nats']:.2f}, total {val['total_nats']:.2f} nats per image"
        )
    print(f"checkpoint: {summary['checkpoint']}")
    return 0


def _cmd_demo(args) -> int:
    from acn.demo import format_table, run_demo

    rows = run_demo(args.out, args.overrides)
    print(format_table(rows))
    print(f"runs and summary in {Path(args.out).resolve()}")
    print(f"report: {(Path(args.out) / 'report' / 'index.html').resolve()}")
    return 0


def _cmd_config(args) -> int:
    from acn.config import load_config, preset_names

    if args.config is None:
        print("\n".join(preset_names()))
        return 0
    print(json.dumps(load_config(args.config, args.overrides).to_dict(), indent=2))
    return 0


def _cmd_bench(args) -> int:
    from acn.bench import format_report, run_bench

    report = run_bench(quick=args.quick, large=not args.no_large)
    print(format_report(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def _cmd_eval(args) -> int:
    from acn.checkpoint import atomic_write_json
    from acn.measure import format_summary, measure

    result = measure(
        args.source,
        args.split,
        samples=args.samples,
        seed=args.seed,
        pool=args.pool,
        tour_start=args.tour_start,
        device=args.device,
        batch_size=args.batch_size,
        export=args.export_codes,
        progress=not args.no_progress,
    )
    atomic_write_json(args.out, result)
    print(format_summary(result))
    print(f"written: {args.out}" + (f", {args.export_codes}" if args.export_codes else ""))
    return 0


def _cmd_reproduce(args) -> int:
    from acn.reproduce import format_tables, reproduce

    tables = reproduce(
        args.dataset,
        args.out,
        args.overrides,
        samples=args.samples,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(format_tables(tables))
    print(f"tables: {args.out / 'tables.json'}, {args.out / 'tables.md'}")
    return 0


def _cmd_sample(args) -> int:
    from acn.images import save_png
    from acn.pictures import decoder_passes, load_run, sample_picture
    from acn.training import progress_bar

    run = load_run(args.source, args.device)
    total = decoder_passes(run, args.mode, args.steps)
    with progress_bar(total, args.mode, enabled=total > 0) as bar:
        picture = sample_picture(
            run,
            args.mode,
            num=args.num,
            steps=args.steps,
            per_image=args.per_image,
            seed=args.seed,
            split=args.split,
            progress=bar.update,
        )
    save_png(picture.image, args.out)
    rate = (
        f": {picture.images_drawn} images drawn in {picture.seconds:.1f} s "
        f"({picture.images_per_second:.1f} images/s)"
        if picture.images_drawn
        else ""
    )
    print(f"{args.mode} grid written to {args.out}{rate}")
    return 0


def _cmd_map(args) -> int:
    from acn.checkpoint import atomic_write_bytes
    from acn.errors import ConfigError
    from acn.latent_map import export_projector, latent_maps
    from acn.pictures import load_run

    run = load_run(args.source, args.device)
    if args.split not in run.splits:
        raise ConfigError(f"--split must be one of train, val, test, got {args.split!r}")
    if run.model.code_dim == 0:
        raise ConfigError("latent maps need a model with latent codes (model.prior=none)")
    dataset = run.splits[args.split]
    codes, labels = run.codes(args.split)
    for key, (png, _) in latent_maps(
        codes.numpy(), labels.numpy(), run.name, args.split, args.seed
    ).items():
        atomic_write_bytes(args.out / f"{key}.png", lambda f, data=png: f.write(data))
        print(f"{key} map: {args.out / f'{key}.png'}")
    export_projector(args.out / "projector", codes, labels, dataset.images, run.info.levels)
    print(f"projector: tensorboard --logdir {args.out / 'projector'}")
    return 0


def _cmd_export(args) -> int:
    from acn.export import export_run

    out = export_run(args.source, args.out)
    print(
        f"exported to {out} (config.json, model.safetensors); load with "
        f"acn.ACN.from_pretrained({str(out)!r})"
    )
    if args.push_to_hub:
        from acn.hub import push_to_hub

        url = push_to_hub(out, args.push_to_hub, private=args.private)
        print(f"pushed to the Hub: {url}; load with acn.ACN.from_pretrained({args.push_to_hub!r})")
    return 0


def _cmd_report(args) -> int:
    from acn.report import build_report

    page = build_report(
        args.runs,
        args.out,
        seed=args.seed,
        split=args.split,
        num=args.num,
        steps=args.steps,
        device=args.device,
    )
    print(f"report: {page}")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``acn`` and its sub-commands."""
    parser = _Parser(prog="acn", description="Associative Compression Networks.")
    parser.add_argument("--version", action="version", version=f"acn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a model", description="Train a model.")
    p.add_argument("config", help="preset name (see `acn config`) or path to a TOML file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--resume", type=Path, help="checkpoint (or run directory) to continue from")
    p.set_defaults(run=_cmd_train)

    p = sub.add_parser(
        "demo",
        help="train ACN, VAE and PixelCNN on the digits and compare",
        description="Train ACN and its baselines on the bundled digits, compare on test.",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides for all three")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    p.set_defaults(run=_cmd_demo)

    p = sub.add_parser(
        "eval",
        help="compression and classification numbers of a trained run",
        description="Measure a run the way the paper's tables do (see acn.measure for the "
        "precise definition of every number) and write them as JSON.",
    )
    p.add_argument("source", metavar="RUN", type=Path, help="run directory or checkpoint")
    p.add_argument("--split", default="test", help="train, val or test (default: test)")
    p.add_argument("--out", required=True, type=Path, help="JSON file to write")
    p.add_argument("--samples", type=int, default=100, help="latents z per image (default 100)")
    p.add_argument("--seed", type=int, help="seed for every random draw (default: the run's)")
    p.add_argument(
        "--pool",
        default="split",
        help="neighbours for nats.kl.k*: split (default), train or bank; all are reported",
    )
    p.add_argument("--tour-start", type=int, default=0, help="split row the tour starts at")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--batch-size", type=int, help="images per batch (default: the run's)")
    p.add_argument("--export-codes", type=Path, metavar="FILE.npz", help="also write codes")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(run=_cmd_eval)

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
    p.add_argument("--samples", type=int, default=100, help="latents z per image (default 100)")
    p.add_argument("--seed", type=int, help="evaluation seed (default: each run's)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(run=_cmd_reproduce)

    p = sub.add_parser(
        "sample",
        help="daydreams, reconstructions, neighbours and samples as a PNG grid",
        description="Draw one sampling protocol of a trained run as a labelled PNG grid. "
        "daydream: x -> code -> z ~ p(z|code) -> x ~ r(x|z) -> ..., one row per chain, the real "
        "image first; reconstruct: decoder samples from z ~ q(z|x); neighbours: the nearest "
        "training images by code; prior: decoder samples from z ~ p(z|code of x); "
        "unconditional: samples with no starting image.",
    )
    p.add_argument("source", metavar="RUN", type=Path, help="run directory or checkpoint")
    p.add_argument(
        "--mode", required=True, help="daydream, reconstruct, neighbours, prior or unconditional"
    )
    p.add_argument("--out", required=True, type=Path, help="PNG file to write")
    p.add_argument("--num", type=int, default=8, help="rows (real images), or samples (8)")
    p.add_argument("--steps", type=int, default=8, help="daydream steps per chain (8)")
    p.add_argument("--per-image", type=int, default=8, help="samples or neighbours per row (8)")
    p.add_argument("--seed", type=int, default=0, help="seeds the images chosen and every draw")
    p.add_argument("--split", default="test", help="where real images come from (test)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.set_defaults(run=_cmd_sample)

    p = sub.add_parser(
        "map",
        help="latent maps: PCA and t-SNE PNGs and the TensorBoard projector",
        description="Project a split's codes on their first two principal components and with "
        "t-SNE, coloured by label (OUT/pca.png, OUT/tsne.png), and export codes, labels and "
        "thumbnails for TensorBoard's embedding projector (OUT/projector).",
    )
    p.add_argument("source", metavar="RUN", type=Path, help="run directory or checkpoint")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--split", default="test", help="train, val or test (default: test)")
    p.add_argument("--seed", type=int, default=0, help="t-SNE seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.set_defaults(run=_cmd_map)

    p = sub.add_parser(
        "report",
        help="an HTML page about one or more runs",
        description="Write OUT/index.html: config, training curves, evaluation tables (from "
        "each run's eval-*.json, side by side), daydreams, reconstructions, neighbours, samples "
        "and latent maps, all embedded; and OUT/projector/ for TensorBoard's projector.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", type=Path, help="run directories")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seeds the images chosen and every draw")
    p.add_argument("--split", default="test", help="split for real images and maps (test)")
    p.add_argument("--num", type=int, default=8, help="rows per picture (8)")
    p.add_argument("--steps", type=int, default=8, help="daydream steps and samples per row (8)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.set_defaults(run=_cmd_report)

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
    p.set_defaults(run=_cmd_export)

    p = sub.add_parser(
        "config",
        help="list presets, or print a resolved config",
        description="Without CONFIG, list presets; with it, print the resolved config.",
    )
    p.add_argument("config", nargs="?", help="preset name or TOML path")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(run=_cmd_config)

    p = sub.add_parser(
        "bench",
        help="measure step and k-NN times",
        description="Benchmarks measured side by side in one run.",
    )
    p.add_argument("--out", help="also write the results as JSON")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--no-large", action="store_true", help="skip the N=1,281,167 x D=128 search")
    p.set_defaults(run=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``acn`` console script and ``python -m acn``."""
    from acn.errors import AcnError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.run(args)
    except AcnError as exc:
        from acn.training import TrainingInterrupted

        if isinstance(exc, TrainingInterrupted):
            again = " ".join(shlex.quote(a) for a in _without_resume(argv or sys.argv[1:]))
            print(
                f"acn: {exc}\nresume with: acn {again} --resume {shlex.quote(str(exc.checkpoint))}",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        print(f"acn: error: {exc}", file=sys.stderr)
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
