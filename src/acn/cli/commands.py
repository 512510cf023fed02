"""What each ``acn`` command does, given its parsed arguments (see :mod:`acn.cli.parser`).

Each handler imports the library modules it needs when it runs, so that ``acn --help`` and a
mistyped command answer at once instead of after importing torch.
"""

from __future__ import annotations

import json
from pathlib import Path


def cmd_train(args) -> int:
    from acn.config import load_config

    config = load_config(args.config, args.overrides)
    # Imported only now: a mistyped key or value is answered before torch loads.
    from acn.train.loop import train

    summary = train(config, args.out, resume=args.resume)
    if summary["rank"] != 0:  # under torchrun, rank 0 speaks for the run
        return 0
    val = summary["val"]
    if val:
        print(
            f"step {summary['step']}: validation KL {val['kl_nats']:.2f}, reconstruction "
            f"{val['recon_nats']:.2f}, total {val['total_nats']:.2f} nats per image"
        )
    print(f"checkpoint: {summary['checkpoint']}")
    best = summary["best"]
    if best:
        print(
            f"best on validation: step {best['step']}, total {best['total_nats']:.2f} nats "
            f"per image: {best['checkpoint']}"
        )
    return 0


def _with_threads(args) -> list[str]:
    """The overrides, after ``train.threads`` set to the command's thread count: every run a
    command trains uses the count it evaluates with, unless an override says otherwise."""
    return [f"train.threads={args.threads}", *args.overrides]


def cmd_demo(args) -> int:
    from acn.experiments.demo import format_table, run_demo

    rows = run_demo(args.out, _with_threads(args), checkpoint=args.checkpoint)
    print(format_table(rows))
    print(f"runs and summary in {Path(args.out).resolve()}")
    print(f"report: {(Path(args.out) / 'report' / 'index.html').resolve()}")
    return 0


def cmd_config(args) -> int:
    from acn.config import load_config, preset_names

    if args.config is None:
        print("\n".join(preset_names()))
        return 0
    print(json.dumps(load_config(args.config, args.overrides).to_dict(), indent=2))
    return 0


def cmd_bench(args) -> int:
    from acn.experiments.bench import format_report, run_bench
    from acn.files import atomic_write_json

    report = run_bench(
        quick=args.quick,
        large=not args.no_large,
        device=args.device,
        processes=tuple(args.processes),
        load=not args.no_load,
        codec=[str(run) for run in args.codec or []],
        codec_scale=str(args.codec_scale) if args.codec_scale else None,
    )
    print(format_report(report))
    if args.out:
        atomic_write_json(args.out, report)
        print(f"written: {args.out}")
    return 0


def cmd_eval(args) -> int:
    from acn.eval.measure import format_summary, measure
    from acn.files import atomic_write_json

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
        checkpoint=args.checkpoint,
    )
    atomic_write_json(args.out, result)
    print(format_summary(result))
    print(f"written: {args.out}" + (f", {args.export_codes}" if args.export_codes else ""))
    return 0


def cmd_reproduce(args) -> int:
    from acn.experiments.reproduce import reproduce
    from acn.experiments.tables import format_tables

    tables = reproduce(
        args.dataset,
        args.out,
        _with_threads(args),
        samples=args.samples,
        seed=args.seed,
        progress=not args.no_progress,
        checkpoint=args.checkpoint,
        seeds=args.seeds,
    )
    print(format_tables(tables))
    print(f"tables: {args.out / 'tables.json'}, {args.out / 'tables.md'}")
    return 0


def cmd_ablate(args) -> int:
    from acn.experiments.ablate import ablate, format_ablation, parse_variants

    table = ablate(
        args.dataset,
        args.out,
        _with_threads(args),
        variants=parse_variants(args.variants),
        seeds=args.seeds,
        samples=args.samples,
        seed=args.seed,
        progress=not args.no_progress,
        checkpoint=args.checkpoint,
        time_rounds=args.time_rounds,
    )
    print(format_ablation(table))
    print(f"tables: {args.out / 'ablation.json'}, {args.out / 'ablation.md'}")
    return 0


def _weights(run) -> str:
    """Which weights a command uses, in one line."""
    what = {"best": "best on validation", "last": "last"}.get(run.checkpoint, run.checkpoint)
    return f"weights: {run.path} (step {run.step}, {what})"


def cmd_sample(args) -> int:
    from acn.eval.load import load_run
    from acn.runtime import progress_bar
    from acn.viz.grid import save_png
    from acn.viz.samples import decoder_passes, sample_picture

    run = load_run(args.source, args.device, args.checkpoint)
    print(_weights(run))
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


def cmd_map(args) -> int:
    from acn.errors import ConfigError
    from acn.eval.load import load_run
    from acn.files import atomic_write_bytes
    from acn.viz.latent_maps import export_projector, latent_maps

    run = load_run(args.source, args.device, args.checkpoint)
    print(_weights(run))
    if args.split not in run.splits:
        raise ConfigError(f"--split must be one of {', '.join(run.splits)}, got {args.split!r}")
    if run.model.kind == "pixelcnn":
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


def cmd_export(args) -> int:
    from acn.model import export_run

    out = export_run(args.source, args.out, args.checkpoint)
    print(
        f"exported to {out} (config.json, model.safetensors); load with "
        f"acn.ACN.from_pretrained({str(out)!r})"
    )
    if args.push_to_hub:
        from acn.store.hub import push_to_hub

        url = push_to_hub(out, args.push_to_hub, private=args.private)
        print(f"pushed to the Hub: {url}; load with acn.ACN.from_pretrained({args.push_to_hub!r})")
    return 0


def cmd_report(args) -> int:
    from acn.viz.report import build_report

    page = build_report(
        args.runs,
        args.out,
        seed=args.seed,
        split=args.split,
        num=args.num,
        steps=args.steps,
        device=args.device,
        checkpoint=args.checkpoint,
    )
    print(f"report: {page}")
    return 0


def cmd_compress(args) -> int:
    from acn.experiments.compress import compress_run, format_compress

    summary = compress_run(
        args.source,
        args.out,
        split=args.split or "test",
        images_from=args.images,
        checkpoint=args.checkpoint,
        keep_order=args.keep_order,
        seeds=args.seeds,
        segments=args.segments,
        parts=args.parts,
        threads=args.threads,
        samples=args.samples,
        soft_tour=args.soft_tour,
        exact=args.exact,
        json_path=args.json,  # written with the file, last
    )
    print(format_compress(summary))
    if args.json:
        print(f"written: {args.json}")
    return 0


def cmd_decompress(args) -> int:
    from acn.experiments.compress import decompress_file

    summary = decompress_file(
        args.file, args.model, args.out, checkpoint=args.checkpoint, workers=args.workers
    )
    files = " (PNG files)" if summary["png_files"] else ""
    print(
        f"{summary['num_images']} images in {summary['seconds']:.1f} s "
        f"({summary['images_per_second']:.1f} images/s): {summary['out']}{files}"
    )
    return 0
