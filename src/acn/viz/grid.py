"""Labelled image grids as PNG: the one place that turns pixel levels into pictures."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from acn.files import atomic_write_bytes


def to_uint8(x: torch.Tensor, levels: int) -> np.ndarray:
    """Levels 0..levels-1 -> uint8 0..255, channels last: (..., C, H, W) -> (..., H, W, C)."""
    scaled = (x.detach().cpu().double() * (255.0 / (levels - 1))).round().clamp(0, 255)
    return scaled.to(torch.uint8).movedim(-3, -1).numpy()


def grid(
    images: torch.Tensor,
    levels: int,
    scale: int | None = None,
    pad: int = 3,
    row_labels: list[str] | None = None,
    col_labels: list[str] | None = None,
):
    """Lay out (R, K, C, H, W) images as R rows of K, with optional labels; a PIL image.

    Pixels are enlarged ``scale`` times without smoothing, so small images stay legible; by
    default, enough for tiles of about 48 pixels.
    """
    from PIL import Image, ImageDraw, ImageFont

    if images.ndim != 5:
        raise ValueError(f"expected (rows, cols, C, H, W) images, got {tuple(images.shape)}")
    rows, cols, _, h, w = images.shape
    scale = scale or max(1, 48 // max(h, w))
    pixels = to_uint8(images, levels)  # (R, K, H, W, C)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    font = ImageFont.load_default()
    cell_h, cell_w = h * scale + pad, w * scale + pad
    left = (max(_text_width(font, s) for s in row_labels) + 6) if row_labels else 0
    top = 14 if col_labels else 0
    # Grey gutters between tiles, so that black and white images both stand apart.
    canvas = Image.new("RGB", (left + cols * cell_w + pad, top + rows * cell_h + pad), "white")
    gutter = Image.new("RGB", (cols * cell_w + pad, rows * cell_h + pad), (150, 150, 150))
    canvas.paste(gutter, (left, top))
    draw = ImageDraw.Draw(canvas)
    for r in range(rows):
        y = top + pad + r * cell_h
        if row_labels:
            draw.text((2, y + (h * scale) // 2 - 5), row_labels[r], fill="black", font=font)
        for k in range(cols):
            tile = Image.fromarray(pixels[r, k]).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (left + pad + k * cell_w, y))
    for k, label in enumerate(col_labels or []):
        draw.text((left + pad + k * cell_w, 1), label, fill="black", font=font)
    return canvas


def _text_width(font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return right - left


def plot_png(draw, figsize: tuple[float, float], dpi: int = 100, ncols: int = 1) -> bytes:
    """Draw a matplotlib figure off-screen and return it as PNG bytes.

    ``draw(fig, axes)`` fills the figure; ``axes`` is one Axes, or an array of ``ncols``.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=figsize, dpi=dpi)
    try:
        draw(fig, axes)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def png_bytes(image) -> bytes:
    """Encode a PIL image as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(image, path: str | Path) -> None:
    """Write a PIL image to ``path`` as PNG, atomically."""
    data = png_bytes(image)
    atomic_write_bytes(Path(path), lambda f: f.write(data))
