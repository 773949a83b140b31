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


def small_figures(tmp_path, names=("a.png", "b.png", "c.png")):
    rng = np.random.default_rng(0)
    return {tmp_path / name: plotting.samples_figure(fake_decoder(rng.normal(size=(4, 2)))) for name in names}


def test_png_bytes_are_deterministic_and_close_the_figure():
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()  # another test may leave one open
    rng = np.random.default_rng(0)
    images = fake_decoder(rng.normal(size=(4, 2)))
    first = plotting.png_bytes(plotting.samples_figure(images), dpi=30)
    second = plotting.png_bytes(plotting.samples_figure(images), dpi=30)
    assert first == second and first.startswith(b"\x89PNG")
    assert plt.get_fignums() == open_before


def test_save_all_writes_every_png(tmp_path):
    figures = small_figures(tmp_path / "plots")
    plotting.save_all(figures, dpi=30)
    for path in figures:
        assert imread(path).shape[:2] == (180, 180)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["a.png", "b.png", "c.png"]  # no .tmp


def test_save_all_replaces_none_when_one_target_is_a_directory(tmp_path):
    """The probe's fault: plots/samples.png a directory used to leave the other PNGs replaced."""
    import matplotlib.pyplot as plt

    from fashion_vae.errors import PipelineError

    open_before = plt.get_fignums()
    (tmp_path / "a.png").write_bytes(b"old a")
    (tmp_path / "c.png").mkdir()
    expected = r"c\.png: is a directory, not a file; remove it, then re-run the stage$"
    with pytest.raises(PipelineError, match=expected):
        plotting.save_all(small_figures(tmp_path), dpi=30)
    assert (tmp_path / "a.png").read_bytes() == b"old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "c.png"]  # b.png not written, no .tmp left
    assert plt.get_fignums() == open_before  # every figure closed on the failure too


def test_write_all_leaves_every_target_when_a_later_one_cannot_be_written(tmp_path):
    """Writing the temporary files fails for the last target: the earlier ones stay as they were."""
    from fashion_vae import atomic
    from fashion_vae.errors import PipelineError

    (tmp_path / "first.png").write_bytes(b"old")
    (tmp_path / "not-a-dir").write_bytes(b"a file where a directory is needed")
    with pytest.raises(PipelineError, match=r"not-a-dir/last\.png: cannot write \(.+\)"):
        atomic.write_all({tmp_path / "first.png": b"new", tmp_path / "not-a-dir" / "last.png": b"new"})
    assert (tmp_path / "first.png").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.png", "not-a-dir"]
    atomic.write_all({tmp_path / "first.png": b"new", tmp_path / "sub" / "second.png": b"two"})
    assert (tmp_path / "first.png").read_bytes() == b"new"
    assert (tmp_path / "sub" / "second.png").read_bytes() == b"two"
