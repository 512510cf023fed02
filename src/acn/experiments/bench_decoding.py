"""PixelCNN decoding speed: the cached incremental decoder against a full pass per pixel.

Both paths draw the same images from the same generator (tests/nn/test_incremental.py); here
they are timed side by side on one machine, images per second at 8x8 (the digits preset's
decoder) and 28x28 (a 64-channel, 9-layer gated PixelCNN, the size an MNIST model has), at batch
1 and 64, and a 28x28 daydream (8 chains x 8 steps) of the ``mnist-acn`` preset's architecture.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from acn import sampling
from acn.config import load_config
from acn.data.info import DataInfo
from acn.model import ACN

# name -> (preset, overrides, image shape (C, H, W))
DECODERS = {
    "8x8": ("digits-acn", [], (1, 8, 8)),
    "28x28": (
        "digits-acn",
        ["model.decoder_channels=64", "model.pixelcnn_layers=9", "model.latent_map_channels=16"],
        (1, 28, 28),
    ),
}
BATCHES = (1, 64)


def synthetic_model(preset: str, overrides: list[str], shape, device, num_codes: int = 64) -> ACN:
    """An untrained model of the preset's architecture on binary images of ``shape`` with a
    bank of ``num_codes``, in eval mode: decoding and step times do not depend on the weights."""
    config = load_config(preset, overrides)
    torch.manual_seed(0)
    info = DataInfo(f"synthetic {shape}", shape, 2, 10)
    return ACN(config, info, num_codes=num_codes).to(device).eval()


def _seconds(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


@torch.no_grad()
def decoding_records(
    device: torch.device, quick: bool = False, large: bool = True
) -> list[dict[str, Any]]:
    """Images per second of both decoding paths for each shape and batch, and their ratio.

    In ``quick`` mode the full pass is not timed at 28x28 (minutes on a CPU at batch 64); those
    records' full-pass fields are None. Without ``large`` only the 8x8 decoder is timed.
    """
    records = []
    for name, (preset, overrides, shape) in DECODERS.items():
        if name != "8x8" and not large:
            continue
        decoder = synthetic_model(preset, overrides, shape, device).decoder
        for batch in BATCHES:
            z = torch.randn(batch, decoder.code_dim, device=device)

            def draw(cached: bool, z=z, decoder=decoder):
                g = torch.Generator(device=device).manual_seed(0)
                return decoder.sample(z, g, cached=cached)

            draw(True)  # warm-up (allocator, first-call dispatch)
            cached = _seconds(lambda: draw(True), device)
            skip = quick and name == "28x28"
            full = None if skip else _seconds(lambda: draw(False), device)
            records.append(
                {
                    "image": name,
                    "batch": batch,
                    "cached_s": cached,
                    "cached_images_per_s": batch / cached,
                    "full_pass_s": full,
                    "full_pass_images_per_s": None if full is None else batch / full,
                    "speedup": None if full is None else full / cached,
                }
            )
    return records


@torch.no_grad()
def daydream_record(device: torch.device, chains: int = 8, steps: int = 8) -> dict[str, Any]:
    """Wall time of a 28x28 daydream with the ``mnist-acn`` preset's architecture."""
    model = synthetic_model("mnist-acn", [], (1, 28, 28), device)
    g = torch.Generator(device=device).manual_seed(0)
    real = torch.randint(0, 2, (chains, 1, 28, 28), generator=g, device=device)
    seconds = _seconds(lambda: sampling.daydream(model, real, steps, g), device)
    return {"preset": "mnist-acn", "chains": chains, "steps": steps, "seconds": seconds}


def format_decoding(records: list[dict[str, Any]], daydream: dict[str, Any] | None) -> list[str]:
    """Lines of the decoding table for :func:`acn.experiments.bench.format_report`."""
    lines = ["PixelCNN decoding, images/s (cached incremental vs a full pass per pixel):"]
    for r in records:
        full = "-" if r["full_pass_images_per_s"] is None else f"{r['full_pass_images_per_s']:.2f}"
        ratio = "-" if r["speedup"] is None else f"{r['speedup']:.1f}x"
        lines.append(
            f"  {r['image']:>5} batch {r['batch']:>2}: cached {r['cached_images_per_s']:9.2f}  "
            f"full pass {full:>9}  speed-up {ratio}"
        )
    if daydream is not None:
        lines.append(
            f"  daydream, {daydream['preset']} architecture, {daydream['chains']} chains x "
            f"{daydream['steps']} steps at 28x28: {daydream['seconds']:.1f} s"
        )
    return lines
