"""Latent maps: codes projected to 2-D (PCA, t-SNE) and TensorBoard's embedding projector.

The paper's Figure 3 shows MNIST test codes on their first two principal components, coloured
by class, made with TensorBoard's projector; :func:`export_projector` writes the same view.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from acn.viz.grid import plot_png, to_uint8


def pca_2d(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes on their first two principal components: ``(points (N, 2), explained (2,))``.

    ``explained`` is the fraction of the codes' variance along each of the two axes.
    """
    centred = codes - codes.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    explained = variance[:2] / max(variance.sum(), 1e-30)
    points = centred @ vt[:2].T
    if points.shape[1] < 2:  # one-dimensional codes: put them on a line
        points = np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
        explained = np.pad(explained, (0, 2 - len(explained)))
    return points, explained


def tsne_2d(codes: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE embedding of the codes in 2-D (scikit-learn, PCA initialisation, fixed seed)."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(codes) - 1) // 3)))
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
    return tsne.fit_transform(codes.astype(np.float64))


def scatter_png(points: np.ndarray, labels: np.ndarray | None, title: str) -> bytes:
    """A scatter plot coloured by label, as PNG bytes (matplotlib, no display needed)."""

    def draw(fig, ax):
        from matplotlib import pyplot as plt

        if labels is None or (labels < 0).all():
            ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7)
        else:
            classes = np.unique(labels)
            cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
            for i, cls in enumerate(classes):
                keep = labels == cls
                ax.scatter(
                    points[keep, 0],
                    points[keep, 1],
                    s=6,
                    alpha=0.8,
                    color=cmap(i % cmap.N),
                    label=str(cls),
                )
            ax.legend(markerscale=2.5, fontsize=7, loc="best", frameon=False, ncols=2)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])

    return plot_png(draw, figsize=(5.5, 5))


def latent_maps(
    codes: np.ndarray, labels: np.ndarray | None, name: str, split: str, seed: int = 0
) -> dict[str, tuple[bytes, str]]:
    """The PCA and t-SNE maps of a split's codes: ``{"pca": (png, caption), "tsne": ...}``."""
    points, explained = pca_2d(codes)
    pca_title = f"{name}: {split} codes, PCA ({100 * explained.sum():.0f}% of variance)"
    return {
        "pca": (
            scatter_png(points, labels, pca_title),
            "Codes on their first two principal components, coloured by label.",
        ),
        "tsne": (
            scatter_png(tsne_2d(codes, seed), labels, f"{name}: {split} codes, t-SNE"),
            "t-SNE of the codes, coloured by label.",
        ),
    }


def export_projector(
    log_dir: str | Path,
    codes: torch.Tensor,
    labels: torch.Tensor,
    images: torch.Tensor,
    levels: int,
    tag: str = "codes",
) -> Path:
    """Write codes, labels and thumbnails for TensorBoard's embedding projector.

    View with ``tensorboard --logdir LOG_DIR`` (the "Projector" tab).

    Args:
        log_dir: output folder.
        codes: (N, D) codes.
        labels: (N,) labels (-1 for none).
        images: (N, C, H, W) integer levels, shown as thumbnails.
        levels: pixel levels.
        tag: the embedding's name.
    """
    from torch.utils.tensorboard import SummaryWriter

    thumbnails = torch.from_numpy(to_uint8(images, levels)).movedim(-1, 1).float() / 255.0
    metadata = [str(int(v)) if int(v) >= 0 else "?" for v in labels]
    writer = SummaryWriter(str(log_dir))
    try:
        writer.add_embedding(
            codes.float(), metadata=metadata, label_img=thumbnails, global_step=0, tag=tag
        )
    finally:
        writer.close()
    return Path(log_dir)
