"""Figures: sizes in pixels, not blank, grids at the right latent points."""
import numpy as np
import pytest
from matplotlib.image import imread
from scipy.stats import norm

from fashion_vae import plotting


def fake_decoder(z):
    """Image brightness encodes the latent point, so the grid layout can be checked."""
    z = np.asarray(z)
    img = np.zeros((len(z), 28, 28, 1), np.float32)
    img[:, :14] = (1 / (1 + np.exp(-z[:, 0])))[:, None, None, None]
    img[:, 14:] = (1 / (1 + np.exp(-z[:, 1])))[:, None, None, None]
    return img


def saved(fig, path, dpi):
    plotting.save(fig, path, dpi)
    image = imread(path)
    return image


def assert_not_blank(image):
    assert image.std() > 0.01


def test_grid_values():
    np.testing.assert_allclose(plotting.grid_values(3, "quantile", 0.05, 3.0), norm.ppf([0.05, 0.5, 0.95]), atol=1e-12)
    np.testing.assert_allclose(plotting.grid_values(3, "range", 0.05, 2.0), [-2, 0, 2])
    assert plotting.grid_values(1, "quantile", 0.05, 2.0).tolist() == [0.0]


def test_tile_is_row_major():
    images = np.stack([np.full((28, 28), i, np.float32) for i in range(6)])
    canvas = plotting.tile(images, 2, 3)
    assert canvas.shape == (56, 84)
    assert canvas[0, 28] == 1 and canvas[28, 0] == 3 and canvas[55, 83] == 5


@pytest.mark.parametrize("latent_dim", [2, 5])
def test_manifold_png(tmp_path, latent_dim):
    values = plotting.grid_values(4, "range", 0.05, 2.0)
    axes = plotting.principal_axes(np.random.default_rng(0).normal(size=(50, latent_dim)))
    fig = plotting.manifold_figure(fake_decoder, latent_dim, values, axes)
    title = fig.axes[0].get_title()
    assert ("slice through the origin" in title) == (latent_dim > 2)
    image = saved(fig, tmp_path / "m.png", dpi=50)
    assert image.shape[:2] == (400, 400)
    assert_not_blank(image)


def test_manifold_layout_puts_large_z1_on_top():
    captured = {}

    def recording_decoder(z):
        captured["z"] = z
        return fake_decoder(z)

    plotting.manifold_figure(recording_decoder, 2, np.array([-1.0, 1.0]))
    z = captured["z"]
    assert z[0].tolist() == [-1.0, 1.0]  # top-left: smallest z0, largest z1
    assert z[-1].tolist() == [1.0, -1.0]


def test_clusters_png_and_legend(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 10
    fig = plotting.clusters_figure(rng.normal(size=(200, 2)) + labels[:, None], labels)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[0] == "T-shirt/top" and legend[-1] == "Ankle boot" and len(legend) == 10
    image = saved(fig, tmp_path / "c.png", dpi=40)
    assert image.shape[:2] == (280, 360)
    assert_not_blank(image)
    fig = plotting.clusters_figure(rng.normal(size=(200, 6)), labels)
    assert "principal components" in fig.axes[0].get_title()
    plotting.save(fig, tmp_path / "c6.png", dpi=40)


def test_reconstructions_and_samples_png(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 2)
    originals = rng.random((20, 28, 28, 1)).astype(np.float32)
    fig = plotting.reconstructions_figure(originals, originals * 0.5, labels)
    image = saved(fig, tmp_path / "r.png", dpi=50)
    width, height = plotting.figure_pixels(plotting.reconstructions_inches(2), 50)
    assert image.shape[:2] == (height, width)
    assert_not_blank(image)
    image = saved(plotting.samples_figure(fake_decoder(rng.normal(size=(10, 2)))), tmp_path / "s.png", dpi=50)
    assert image.shape[:2] == (300, 300)
    assert_not_blank(image)


def test_pick_per_class():
    labels = np.array([3, 1, 3, 1, 3, 0])
    assert plotting.pick_per_class(labels, 2).tolist() == [5, 1, 3, 0, 2]
