"""Figures of the plot stage. Pure numpy + matplotlib: decoding comes in as a callable.

Every figure has a fixed size in inches, so at a given dpi its PNG has a known size
in pixels (no tight bounding box), and figures are closed after saving.

The figures follow the model's prior p(z) (fashion_vae/priors.py): samples are drawn
from it, a learned prior's manifold grid spans the test z_mean (where its mass is,
not where N(0, 1)'s is) and its component means are drawn over the clusters. The
model comes in duck-typed (``latent_dim``, ``prior_name``, ``prior.sample``,
``prior.components``), so this module imports no TensorFlow.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")  # non-interactive: no display on servers or CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import norm  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from fashion_vae import atomic  # noqa: E402
from fashion_vae.dataset import CLASS_NAMES  # noqa: E402

Decoder = Callable[[np.ndarray], np.ndarray]  # (N, d) latent points -> (N, 28, 28, 1) pixels
Encoder = Callable[[np.ndarray], np.ndarray]  # (N, 28, 28, 1) images -> (N, d) z_mean

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


def project(points: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``points`` (N, d) in the clusters figure's 2-D coordinates: themselves for d = 2,
    else centred on the mean of ``z`` and projected onto its top two principal directions."""
    if z.shape[1] == 2:
        return points
    return (points - z.mean(axis=0)) @ principal_axes(z).T


@dataclass(frozen=True)
class ManifoldGrid:
    """Where the manifold figure decodes: ``origin + x * axes_2d[0] + y * axes_2d[1]``.

    ``origin`` None is the latent origin (the N(0, I) grid); otherwise the grid is centred
    on the test z_mean and ``span`` says how it was chosen, for the title.
    """

    x_values: np.ndarray
    y_values: np.ndarray
    axes_2d: np.ndarray
    origin: np.ndarray | None = None
    span: str | None = None


def manifold_grid(
    z: np.ndarray, n: int, spacing: str, quantile: float, value_range: float, learned_prior: bool
) -> ManifoldGrid:
    """The manifold grid for test z_mean ``z`` (N, d).

    N(0, I) prior, or ``spacing`` "range": the same values on both axes through the origin
    (:func:`grid_values`). A learned prior's mass is wherever training put it, so with
    "quantile" spacing each axis spans the [q, 1 - q] quantiles of the test z_mean along it
    (its principal directions, centred on its mean, for d > 2).
    """
    axes_2d = principal_axes(z)
    if not learned_prior or spacing != "quantile":
        values = grid_values(n, spacing, quantile, value_range)
        return ManifoldGrid(values, values, axes_2d)
    origin = None if z.shape[1] == 2 else z.mean(axis=0)
    coords = project(z, z)
    levels = np.linspace(quantile, 1.0 - quantile, n) if n > 1 else np.array([0.5])  # n = 1: the median
    x_values, y_values = (np.quantile(coords[:, i], levels) for i in range(2))
    return ManifoldGrid(x_values, y_values, axes_2d, origin, f"test z_mean quantiles {quantile:g}-{1 - quantile:g}")


def manifold_figure(
    decode: Decoder,
    latent_dim: int,
    values: np.ndarray,
    axes_2d: np.ndarray | None = None,
    y_values: np.ndarray | None = None,
    origin: np.ndarray | None = None,
    span: str | None = None,
) -> plt.Figure:
    """Decoded images over a grid of latent points (a 2-D slice for d > 2).

    ``values`` are the first axis' coordinates, ``y_values`` (default: the same) the
    second's; ``origin`` (default: the latent origin) is where the slice is centred and
    ``span`` names how the grid was chosen (see :class:`ManifoldGrid`).
    """
    x_values = values
    y_values = values if y_values is None else y_values
    nx, ny = len(x_values), len(y_values)
    if axes_2d is None:
        axes_2d = np.eye(2, latent_dim)
    u, v = np.meshgrid(x_values, y_values[::-1])  # top row = largest second coordinate
    z = u.reshape(-1, 1) * axes_2d[0] + v.reshape(-1, 1) * axes_2d[1]
    if origin is not None:
        z = z + origin
    canvas = tile(decode(z.astype(np.float32)), ny, nx)

    fig, ax = plt.subplots(figsize=MANIFOLD_INCHES)
    ax.imshow(canvas, cmap="Greys_r", vmin=0.0, vmax=1.0, extent=(0, nx * SIDE, ny * SIDE, 0))
    x_centres, y_centres = np.arange(nx) * SIDE + SIDE / 2, np.arange(ny) * SIDE + SIDE / 2
    x_step, y_step = max(1, nx // 10), max(1, ny // 10)  # at most ~10 labelled ticks per axis
    ax.set_xticks(x_centres[::x_step], [f"{t:.2f}" for t in x_values[::x_step]], rotation=90)
    ax.set_yticks(y_centres[::y_step], [f"{t:.2f}" for t in y_values[::-1][::y_step]])
    if latent_dim == 2:
        ax.set_xlabel("z0")
        ax.set_ylabel("z1")
        title = "Latent manifold: decoded images over the 2-D latent space"
    elif origin is None:
        ax.set_xlabel("coordinate along principal direction 1")
        ax.set_ylabel("coordinate along principal direction 2")
        title = f"Latent manifold: 2-D slice through the origin of the {latent_dim}-D latent (top 2 PCs)"
    else:
        ax.set_xlabel("offset from the mean test z_mean along principal direction 1")
        ax.set_ylabel("offset from the mean test z_mean along principal direction 2")
        title = f"Latent manifold: 2-D slice through the mean test z_mean of the {latent_dim}-D latent (top 2 PCs)"
    if span is None:
        ax.set_title(title)
    else:
        ax.set_title(f"{title}\nspanning {span}", fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.1, top=0.94)
    return fig


def clusters_figure(
    z: np.ndarray,
    labels: np.ndarray,
    component_means: np.ndarray | None = None,
    component_weights: np.ndarray | None = None,
) -> plt.Figure:
    """Scatter of test z_mean coloured by class (first two principal components for d > 2).

    A learned prior's component means (C, d) are drawn over it, projected like the
    points, each marker's area proportional to its component's weight.
    """
    points = project(z, z)
    if z.shape[1] == 2:
        xlabel, ylabel = "z0", "z1"
        title = "Test set z_mean by class"
    else:
        xlabel, ylabel = "principal component 1", "principal component 2"
        title = f"Test set z_mean by class: first two principal components of the {z.shape[1]}-D latent"
    fig, ax = plt.subplots(figsize=CLUSTERS_INCHES)
    cmap = plt.get_cmap("tab10")
    for c, name in enumerate(CLASS_NAMES):
        mask = labels == c
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=3, alpha=0.6, color=cmap(c), label=name, rasterized=True)
    if component_means is not None:
        means = project(component_means, z)
        ax.scatter(means[:, 0], means[:, 1], s=component_marker_sizes(component_weights), marker="X",
                   color="black", edgecolors="white", linewidths=0.8, zorder=3, label="prior component means")
        title += "\nwith the prior's component means (marker area proportional to weight)"
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, **({} if component_means is None else {"fontsize": 10}))  # longer title: smaller
    legend = ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=4, frameon=False)
    if component_means is not None:
        legend.legend_handles[-1].set_sizes([MEAN_MARKER_SIZE])  # one fixed size, not 4x a weight's
    # A longer legend entry with the means: a little more room on the right.
    fig.subplots_adjust(left=0.08, right=0.78 if component_means is None else 0.74, bottom=0.08, top=0.93)
    return fig


MEAN_MARKER_SIZE = 60.0  # points^2 of a component with the average weight 1/C


def component_marker_sizes(weights: np.ndarray) -> np.ndarray:
    """Marker areas proportional to the weights: ``MEAN_MARKER_SIZE`` at the average 1/C."""
    weights = np.asarray(weights, dtype=np.float64)
    return MEAN_MARKER_SIZE * len(weights) * weights


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


def samples_figure(images: np.ndarray, prior_text: str = "the prior z ~ N(0, I)") -> plt.Figure:
    """Decoded draws from the prior (``prior_text`` names it), tiled in a near-square grid."""
    n = len(images)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    padded = np.zeros((rows * cols, SIDE, SIDE), dtype=np.float32)
    padded[:n] = images.reshape(n, SIDE, SIDE)
    fig, ax = plt.subplots(figsize=SAMPLES_INCHES)
    ax.imshow(tile(padded, rows, cols), cmap="Greys_r", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(f"{n} samples decoded from {prior_text}")
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.93)
    return fig


def prior_text(model: Any) -> str:
    """How the titles name the model's prior."""
    if model.prior_name == "normal":
        return "the prior z ~ N(0, I)"
    if model.prior_name == "mixture":
        return f"the learned prior: a mixture of {model.prior_components} Gaussians"
    return f"the learned prior: a VampPrior over {model.prior_components} pseudo-inputs"


def prior_draws(model: Any, n: int, seed: int) -> np.ndarray:
    """``n`` latent points drawn from the model's prior, float32 (n, d)."""
    if model.prior_name == "normal":
        # numpy's generator, as before learned priors existed: the default samples.png is unchanged.
        return np.random.default_rng(seed).standard_normal((n, model.latent_dim)).astype(np.float32)
    return np.asarray(model.prior.sample(n, seed=seed), dtype=np.float32)


def prior_components(model: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(means (C, d), weights (C,)) of a learned prior's components; None for N(0, I).

    Mixture: its means and softmax(logits); VampPrior: the encoder's z_mean at its
    pseudo-inputs, weight 1/C each (both are what ``prior.components()`` returns).
    """
    if model.prior_name == "normal":
        return None
    log_weights, means, _ = model.prior.components()
    return np.asarray(means, dtype=np.float64), np.exp(np.asarray(log_weights, dtype=np.float64))


def stage_figures(
    model: Any,
    decode: Decoder,
    encode_mean: Encoder,
    x_test: np.ndarray,
    y_test: np.ndarray,
    z: np.ndarray,
    labels: np.ndarray,
    plot: dict[str, Any],
) -> dict[str, plt.Figure]:
    """The plot stage's four figures, by file name, for ``model`` and its test-set z_mean ``z``.

    ``plot`` is the ``plot`` section of params.yaml. On an error, figures already made are closed.
    """
    figures: dict[str, plt.Figure] = {}
    try:
        grid = manifold_grid(z, plot["manifold_n"], plot["manifold_spacing"], plot["manifold_quantile"],
                             plot["manifold_range"], learned_prior=model.prior_name != "normal")
        figures["manifold.png"] = manifold_figure(decode, model.latent_dim, grid.x_values, grid.axes_2d,
                                                  grid.y_values, grid.origin, grid.span)
        components = prior_components(model)
        figures["clusters.png"] = clusters_figure(z, labels, *(components or ()))
        picked = pick_per_class(y_test, plot["reconstructions_per_class"])
        figures["reconstructions.png"] = reconstructions_figure(
            x_test[picked], decode(encode_mean(x_test[picked])), y_test[picked]
        )
        draws = prior_draws(model, plot["samples_n"], plot["seed"])
        figures["samples.png"] = samples_figure(decode(draws), prior_text(model))
    except BaseException:
        for fig in figures.values():
            plt.close(fig)
        raise
    return figures


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
