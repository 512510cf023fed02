"""The trials behind the mnist5k presets' data and prior settings: what limits the ACN's codes
on the 4,000 mnist5k training images. Each candidate trains from an mnist5k preset with a few
overrides, for the same number of steps, then is measured by ``acn eval`` on the VALIDATION
split (20 latent samples per image, the split's own codes as the neighbour pool, the probes
fitted on the training codes).
The test split is never read: it is for ``acn reproduce mnist5k`` with the chosen settings.

    python scripts/mnist5k_representation.py --out runs/repr [--only a,b] [--steps 3000]
    python scripts/mnist5k_representation.py --out runs/repr --table

Several processes may share one ``--out`` (``--only`` gives each its candidates): a finished
candidate (its ``eval-val.json`` exists) is skipped, so a killed lane restarts where it stopped.
``--table`` prints every finished candidate's row as Markdown and writes ``table.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SHIFT = ["model.prior_network=shift", "model.prior_components=1"]
LINEAR = ["model.prior_network=linear", "model.prior_components=1"]
DYNAMIC = ["data.name=mnist5k-dynamic"]

# name -> (preset, overrides). The neighbour count K matters for the tour because the evaluated
# split is sparse: 500 codes, against the 4,000 the training draws neighbours from, so the tour's
# steps are longer than the training's K = 5 neighbours; K = 20 and 40 of 4,000 are about as far
# as the 2nd to 5th nearest of 500.
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "paper static": ("mnist5k-acn", []),
    "shift static": ("mnist5k-acn", SHIFT),
    "paper dynamic": ("mnist5k-acn", DYNAMIC),
    "shift dynamic": ("mnist5k-acn", SHIFT + DYNAMIC),
    "linear dynamic": ("mnist5k-acn", LINEAR + DYNAMIC),
    "shift dynamic k20": ("mnist5k-acn", SHIFT + DYNAMIC + ["codebank.k=20"]),
    "shift dynamic k40": ("mnist5k-acn", SHIFT + DYNAMIC + ["codebank.k=40"]),
    "shift dynamic k100": ("mnist5k-acn", SHIFT + DYNAMIC + ["codebank.k=100"]),
    "paper dynamic k20": ("mnist5k-acn", DYNAMIC + ["codebank.k=20"]),
    "shift dynamic wd": ("mnist5k-acn", SHIFT + DYNAMIC + ["train.weight_decay=1e-5"]),
    "shift dynamic D32": ("mnist5k-acn", SHIFT + DYNAMIC + ["model.code_dim=32"]),
    "pixelcnn static": ("mnist5k-pixelcnn", []),
    "pixelcnn dynamic": ("mnist5k-pixelcnn", DYNAMIC),
    "vae dynamic": ("mnist5k-vae", DYNAMIC),
}


def slug(name: str) -> str:
    return name.replace(" ", "-")


def run_one(name: str, out: Path, steps: int, threads: int) -> None:
    preset, overrides = CANDIDATES[name]
    run = out / slug(name)
    result = run / "eval-val.json"
    if result.exists():
        print(f"{name}: done already", flush=True)
        return
    common = [f"train.steps={steps}", f"train.threads={threads}", "train.progress=false"]
    acn = [sys.executable, "-m", "acn"]
    if not _finished(run, steps):
        resume = ["--resume", str(run)] if (run / "checkpoints" / "last.pt").exists() else []
        subprocess.run(
            [*acn, "train", preset, *overrides, *common, "--out", str(run), *resume], check=True
        )
    subprocess.run(
        [*acn, "eval", str(run), "--split", "val", "--samples", "20", "--threads", str(threads)]
        + ["--no-progress", "--out", str(result)],
        check=True,
    )
    print(f"{name}: {_row(name, json.loads(result.read_text()))}", flush=True)


def _finished(run: Path, steps: int) -> bool:
    metrics = run / "metrics.jsonl"
    if not metrics.exists():
        return False
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return any(line.get("step") == steps and line.get("split") == "val" for line in lines)


def _row(name: str, e: dict) -> dict:
    nats, kl, cls = e["nats"], e["nats"]["kl"], e.get("classification") or {}
    return {
        "candidate": name,
        "best step": e["step"],
        "total": nats["total"],
        "ordered": nats.get("ordered"),
        "unordered": nats.get("unordered"),
        "tour": kl.get("tour"),
        "uncond": kl.get("unconditional"),
        "recon": nats.get("recon"),
        "linear": cls.get("linear"),
        "knn": cls.get("knn"),
        "pixels linear": (cls.get("pixels") or {}).get("linear"),
        "pixels knn": (cls.get("pixels") or {}).get("knn"),
    }


def table(out: Path) -> None:
    rows = []
    for name in CANDIDATES:
        path = out / slug(name) / "eval-val.json"
        if path.exists():
            rows.append(_row(name, json.loads(path.read_text())))
    (out / "table.json").write_text(json.dumps(rows, indent=2) + "\n")
    if not rows:
        print("no finished candidates")
        return
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        cells = [
            f"{v:.3f}"
            if isinstance(v, float) and v < 1.5
            else f"{v:.2f}"
            if isinstance(v, float)
            else ""
            if v is None
            else str(v)
            for v in row.values()
        ]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", help="comma-separated candidate names (default: all)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="print the finished rows")
    args = parser.parse_args()
    if args.table:
        table(args.out)
        return
    names = args.only.split(",") if args.only else list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidates {unknown}; known: {list(CANDIDATES)}")
    for name in names:
        run_one(name, args.out, args.steps, args.threads)


if __name__ == "__main__":
    main()
