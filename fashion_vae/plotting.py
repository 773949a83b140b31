"""Figures of the plot stage. Pure numpy + matplotlib: decoding comes in as a callable.

Every figure has a fixed size in inches, so at a given dpi its PNG has a known size
in pixels (no tight bounding box), and figures are closed after saving.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # non-interactive: no display on servers or CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import norm  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from fashion_vae import atomic  # noqa: E402
from fashion_vae.dataset import CLASS_NAMES  # noqa: E402

Decoder = Callable[[np.ndarray], np.ndarray]  # (N, d) latent points -> (N, 28, 28, 1) pixels

MANIFOLD_INCHES = (8.0, 8.0)
CLUSTERS_INCHES = (9.0, 7.0)
SAMPLES_INCHES = (6.0, 6.0)
SIDE = 28


def figure_pixels(inches: tuple[float, float], dpi: int) -> tuple[int, int]:
    """(width, height) in pixels of a PNG saved from a figure of ``inches``."""
    return round(inches[0] * dpi), round(inches[1] * dpi)


def grid_values(n: int, spacing: str, quantile: float, value_range: float) -> np.ndarray:
    """``n`` increasing latent coordinates: N(0, 1) quantiles in [q, 1-q], or [-r, r]."""
    if n == 1:
        return np.zeros(1)
    if spacing == "quantile":
        return norm.ppf(np.linspace(quantile, 1.0 - quantile, n))
    return np.linspace(-value_range, value_range, n)


def tile(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(rows*cols, 28, 28[, 1]) -> one (rows*28, cols*28) image, row-major."""
    images = images.reshape(rows, cols, SIDE, SIDE)
    return images.transpose(0, 2, 1, 3).reshape(rows * SIDE, cols * SIDE)


def principal_axes(z: np.ndarray) -> np.ndarray:
    """The top two principal directions of ``z`` as a (2, d) array (identity for d = 2)."""
    if z.shape[1] == 2:
        return np.eye(2)
    return PCA(n_components=2, random_state=0).fit(z).components_


def manifold_figure(
    decode: Decoder, latent_dim: int, values: np.ndarray, axes_2d: np.ndarray | None = None
) -> plt.Figure:
    """Decoded images over a grid of latent points (a 2-D slice through the origin for d > 2)."""
    n = len(values)
    if axes_2d is None:
        axes_2d = np.eye(2, latent_dim)
    u, v = np.meshgrid(values, values[::-1])  # top row = largest second coordinate
    z = u.reshape(-1, 1) * axes_2d[0] + v.reshape(-1, 1) * axes_2d[1]
    canvas = tile(decode(z.astype(np.float32)), n, n)

    fig, ax = plt.subplots(figsize=MANIFOLD_INCHES)
    ax.imshow(canvas, cmap="Greys_r", vmin=0.0, vmax=1.0, extent=(0, n * SIDE, n * SIDE, 0))
    centres = np.arange(n) * SIDE + SIDE / 2
    step = max(1, n // 10)  # at most ~10 labelled ticks per axis
    ax.set_xticks(centres[::step], [f"{t:.2f}" for t in values[::step]], rotation=90)
    ax.set_yticks(centres[::step], [f"{t:.2f}" for t in values[::-1][::step]])
    if latent_dim == 2:
        ax.set_xlabel("z0")
        ax.set_ylabel("z1")
        ax.set_title("Latent manifold: decoded images over the 2-D latent space")
    else:
        ax.set_xlabel("coordinate along principal direction 1")
        ax.set_ylabel("coordinate along principal direction 2")
        ax.set_title(f"Latent manifold: 2-D slice through the origin of the {latent_dim}-D latent (top 2 PCs)")
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.1, top=0.94)
    return fig


def clusters_figure(z: np.ndarray, labels: np.ndarray) -> plt.Figure:
    """Scatter of test z_mean coloured by class (first two principal components for d > 2)."""
    if z.shape[1] == 2:
        points, xlabel, ylabel = z, "z0", "z1"
        title = "Test set z_mean by class"
    else:
        points = (z - z.mean(axis=0)) @ principal_axes(z).T
        xlabel, ylabel = "principal component 1", "principal component 2"
        title = f"Test set z_mean by class: first two principal components of the {z.shape[1]}-D latent"
    fig, ax = plt.subplots(figsize=CLUSTERS_INCHES)
    cmap = plt.get_cmap("tab10")
    for c, name in enumerate(CLASS_NAMES):
        mask = labels == c
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=3, alpha=0.6, color=cmap(c), label=name, rasterized=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=4, frameon=False)
    fig.subplots_adjust(left=0.08, right=0.78, bottom=0.08, top=0.93)
    return fig


def pick_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` images of each class present, class by class."""
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(CLASS_NAMES))])


def reconstructions_figure(originals: np.ndarray, reconstructed: np.ndarray, labels: np.ndarray) -> plt.Figure:
    """One column per class; each original above its reconstruction."""
    classes = [c for c in range(len(CLASS_NAMES)) if np.any(labels == c)]
    per_class = max(int(np.sum(labels == c)) for c in classes)
    fig, axes = plt.subplots(2 * per_class, len(classes), figsize=reconstructions_inches(per_class, len(classes)),
                             squeeze=False)
    for col, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        for row in range(per_class):
            for offset, source in ((0, originals), (1, reconstructed)):
                ax = axes[2 * row + offset, col]
                ax.set_xticks([])
                ax.set_yticks([])
                if row < len(idx):
                    ax.imshow(source[idx[row]].reshape(SIDE, SIDE), cmap="Greys_r", vmin=0, vmax=1)
                if col == 0:
                    ax.set_ylabel("original" if offset == 0 else "reconstruction", fontsize=7)
        axes[0, col].set_title(CLASS_NAMES[c], fontsize=8)
    fig.suptitle("Test images (odd rows) and their reconstructions from z_mean (even rows)")
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.02, top=0.88, wspace=0.05, hspace=0.1)
    return fig


def reconstructions_inches(per_class: int, n_classes: int = len(CLASS_NAMES)) -> tuple[float, float]:
    return (1.0 * n_classes + 0.5, 1.1 * 2 * per_class + 0.8)


def samples_figure(images: np.ndarray) -> plt.Figure:
    """Decoded draws from the prior N(0, I), tiled in a near-square grid."""
    n = len(images)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    padded = np.zeros((rows * cols, SIDE, SIDE), dtype=np.float32)
    padded[:n] = images.reshape(n, SIDE, SIDE)
    fig, ax = plt.subplots(figsize=SAMPLES_INCHES)
    ax.imshow(tile(padded, rows, cols), cmap="Greys_r", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(f"{n} samples decoded from the prior z ~ N(0, I)")
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.93)
    return fig


def png_bytes(fig: plt.Figure, dpi: int) -> bytes:
    """The PNG of ``fig``; the figure is closed either way."""
    try:
        buffer = io.BytesIO()
        # No Software/date stamps: same figure, same bytes.
        fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
        return buffer.getvalue()
    finally:
        plt.close(fig)


def save_all(figures: dict[str | Path, plt.Figure], dpi: int) -> None:
    """Render every figure, then replace all the PNGs together (atomic.write_all): all or none."""
    try:
        pngs = {path: png_bytes(fig, dpi) for path, fig in figures.items()}
    finally:
        for fig in figures.values():
            plt.close(fig)
    atomic.write_all(pngs)


def save(fig: plt.Figure, path: str | Path, dpi: int) -> None:
    """Write ``fig`` as PNG atomically, then close it."""
    save_all({path: fig}, dpi)
