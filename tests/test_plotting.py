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


# --- Figures that follow the prior (issue 13) -------------------------------------------

def numpy_top2(z):
    """Top two principal directions of ``z`` by numpy's SVD (signs are arbitrary)."""
    return np.linalg.svd(z - z.mean(axis=0), full_matrices=False)[2][:2]


def aligned(axes, reference):
    """``reference`` rows with their signs flipped to match ``axes``'s."""
    return reference * np.sign(np.sum(axes * reference, axis=1))[:, None]


def skewed_latents(d, n=400, seed=0):
    """Test z_mean far from N(0, I): off-centre, stretched, one axis skewed."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d)) * np.linspace(3.0, 0.5, d) + np.arange(1, d + 1)
    z[:, 0] += rng.exponential(2.0, size=n)
    return z


def test_normal_prior_grid_is_unchanged():
    z = skewed_latents(2)
    grid = plotting.manifold_grid(z, 5, "quantile", 0.1, 3.0, learned_prior=False)
    np.testing.assert_allclose(grid.x_values, norm.ppf(np.linspace(0.1, 0.9, 5)), atol=1e-12)
    assert grid.y_values is grid.x_values and grid.origin is None and grid.span is None
    # "range" spacing is a fixed window through the origin whatever the prior.
    grid = plotting.manifold_grid(z, 3, "range", 0.1, 2.0, learned_prior=True)
    assert grid.x_values.tolist() == grid.y_values.tolist() == [-2.0, 0.0, 2.0] and grid.origin is None


def test_learned_prior_grid_spans_quantiles_of_each_latent_axis():
    z = skewed_latents(2)
    grid = plotting.manifold_grid(z, 5, "quantile", 0.1, 3.0, learned_prior=True)
    levels = [0.1, 0.3, 0.5, 0.7, 0.9]
    np.testing.assert_allclose(grid.x_values, np.percentile(z[:, 0], np.multiply(levels, 100)), rtol=1e-12)
    np.testing.assert_allclose(grid.y_values, np.percentile(z[:, 1], np.multiply(levels, 100)), rtol=1e-12)
    assert grid.origin is None and np.array_equal(grid.axes_2d, np.eye(2))
    assert grid.span == "test z_mean quantiles 0.1-0.9"
    one = plotting.manifold_grid(z, 1, "quantile", 0.1, 3.0, learned_prior=True)
    np.testing.assert_allclose([one.x_values[0], one.y_values[0]], np.median(z, axis=0))


def test_learned_prior_grid_in_higher_dimensions_is_centred_on_principal_axes():
    z = skewed_latents(5)
    grid = plotting.manifold_grid(z, 4, "quantile", 0.05, 3.0, learned_prior=True)
    centre = z.mean(axis=0)
    np.testing.assert_allclose(grid.origin, centre)
    reference = aligned(grid.axes_2d, numpy_top2(z))
    np.testing.assert_allclose(grid.axes_2d, reference, atol=1e-8)
    offsets = (z - centre) @ reference.T
    levels = np.linspace(5, 95, 4)
    np.testing.assert_allclose(grid.x_values, np.percentile(offsets[:, 0], levels), atol=1e-8)
    np.testing.assert_allclose(grid.y_values, np.percentile(offsets[:, 1], levels), atol=1e-8)
    # Every decoded point lies in the plane through the centre spanned by the two axes.
    captured = {}

    def recording_decoder(points):
        captured["z"] = points
        return fake_decoder(points)

    fig = plotting.manifold_figure(recording_decoder, 5, grid.x_values, grid.axes_2d, grid.y_values,
                                   grid.origin, grid.span)
    assert "through the mean test z_mean" in fig.axes[0].get_title() and "0.05-0.95" in fig.axes[0].get_title()
    points = captured["z"].astype(np.float64)
    top_left = centre + grid.x_values[0] * reference[0] + grid.y_values[-1] * reference[1]
    bottom_right = centre + grid.x_values[-1] * reference[0] + grid.y_values[0] * reference[1]
    np.testing.assert_allclose(points[0], top_left, atol=1e-5)
    np.testing.assert_allclose(points[-1], bottom_right, atol=1e-5)
    residual = (points - centre) - ((points - centre) @ reference.T) @ reference
    np.testing.assert_allclose(residual, 0, atol=1e-5)


def test_manifold_with_different_axis_values(tmp_path):
    captured = {}

    def recording_decoder(points):
        captured["z"] = points
        return fake_decoder(points)

    fig = plotting.manifold_figure(recording_decoder, 2, np.array([-1.0, 0.0, 1.0]), y_values=np.array([5.0, 7.0]))
    z = captured["z"]
    assert z.shape == (6, 2)
    assert z[0].tolist() == [-1.0, 7.0] and z[2].tolist() == [1.0, 7.0] and z[-1].tolist() == [1.0, 5.0]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["7.00", "5.00"]
    image = saved(fig, tmp_path / "m.png", dpi=40)
    assert image.shape[:2] == (320, 320)


def mean_markers(fig):
    """The scatter of the prior's component means, found by its legend label."""
    [collection] = [c for c in fig.axes[0].collections if c.get_label() == "prior component means"]
    return collection


@pytest.mark.parametrize("latent_dim", [2, 5])
def test_clusters_overlay_component_means_projected_like_the_points(tmp_path, latent_dim):
    z = skewed_latents(latent_dim, n=300)
    labels = np.arange(300) % 10
    means = np.random.default_rng(1).normal(size=(3, latent_dim)) * 2 + 1
    weights = np.array([0.2, 0.3, 0.5])
    fig = plotting.clusters_figure(z, labels, means, weights)
    if latent_dim == 2:
        expected = means
    else:
        axes = aligned(plotting.principal_axes(z), numpy_top2(z))
        expected = (means - z.mean(axis=0)) @ axes.T
    markers = mean_markers(fig)
    np.testing.assert_allclose(markers.get_offsets(), expected, atol=1e-8)
    np.testing.assert_allclose(markers.get_sizes(), plotting.MEAN_MARKER_SIZE * 3 * weights)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[-1] == "prior component means" and len(legend) == 11
    assert "component means" in fig.axes[0].get_title()
    image = saved(fig, tmp_path / "c.png", dpi=40)
    assert image.shape[:2] == (280, 360)
    # No means: no overlay and no legend entry.
    fig = plotting.clusters_figure(z, labels)
    assert not [c for c in fig.axes[0].collections if c.get_label() == "prior component means"]
    assert len(fig.axes[0].get_legend().get_texts()) == 10
    plotting.png_bytes(fig, dpi=20)


def test_samples_title_names_the_prior():
    images = fake_decoder(np.zeros((4, 2)))
    fig = plotting.samples_figure(images)
    assert fig.axes[0].get_title() == "4 samples decoded from the prior z ~ N(0, I)"
    plotting.png_bytes(fig, dpi=20)
    fig = plotting.samples_figure(images, "the learned prior: a mixture of 3 Gaussians")
    assert fig.axes[0].get_title() == "4 samples decoded from the learned prior: a mixture of 3 Gaussians"
    plotting.png_bytes(fig, dpi=20)


# --- The plot stage's logic on a real (tiny, untrained) model -----------------------------

TINY_MODEL = {
    "latent_dim": 2,
    "conv_filters": [8, 16],
    "kernel_size": 3,
    "dense_units": 16,
    "decoder_dense_units": 0,
    "beta": 1.0,
    "prior": "normal",
    "prior_components": 3,
}
PLOT = {"seed": 7, "manifold_n": 4, "manifold_spacing": "quantile", "manifold_quantile": 0.05,
        "manifold_range": 3.0, "reconstructions_per_class": 1, "samples_n": 9, "dpi": 30}


@pytest.fixture(scope="module")
def test_images(raw_dir):
    from fashion_vae import dataset, prepared

    return (prepared.normalise(dataset.load_raw(raw_dir, "test_images")[:200]),
            dataset.load_raw(raw_dir, "test_labels")[:200])


def run_stage_figures(model, images, labels):
    """``plotting.stage_figures`` with the stage's decode/encode, recording every decoder input."""
    from fashion_vae.evaluation import decode, encode

    decoded_inputs = []

    def decode_fn(points):
        decoded_inputs.append(np.array(points))
        return decode(model, points)

    z = encode(model, images)[0]
    figures = plotting.stage_figures(model, decode_fn, lambda x: encode(model, x)[0], images, labels, z, labels, PLOT)
    return figures, decoded_inputs, z


@pytest.mark.parametrize("prior", ["normal", "mixture", "vamp"])
def test_stage_figures_follow_the_prior(tmp_path, test_images, prior):
    from scipy.special import softmax

    from fashion_vae.evaluation import encode
    from fashion_vae.model import build_vae

    images, labels = test_images
    model = build_vae({**TINY_MODEL, "prior": prior}, seed=5)
    if prior == "mixture":  # unequal weights, so marker sizes must follow softmax(logits)
        model.prior.logits.assign(np.array([0.0, 1.0, -1.0], np.float32))
    figures, decoded_inputs, z = run_stage_figures(model, images, labels)
    assert list(figures) == ["manifold.png", "clusters.png", "reconstructions.png", "samples.png"]
    manifold_z, _, samples_z = decoded_inputs  # manifold grid, reconstructions, samples

    levels = np.linspace(5, 95, 4)
    if prior == "normal":
        expected_x = expected_y = norm.ppf(levels / 100)
        expected_samples = np.random.default_rng(7).standard_normal((9, 2)).astype(np.float32)
        assert "z ~ N(0, I)" in figures["samples.png"].axes[0].get_title()
        assert not [c for c in figures["clusters.png"].axes[0].collections
                    if c.get_label() == "prior component means"]
    else:
        expected_x, expected_y = np.percentile(z[:, 0], levels), np.percentile(z[:, 1], levels)
        expected_samples = np.asarray(model.prior.sample(9, seed=7))
        title = figures["samples.png"].axes[0].get_title()
        assert ("mixture of 3 Gaussians" if prior == "mixture" else "VampPrior over 3 pseudo-inputs") in title
        if prior == "mixture":
            means, weights = np.asarray(model.prior.means), softmax(np.array([0.0, 1.0, -1.0]))
        else:
            means, weights = encode(model, np.asarray(model.prior.pseudo_inputs()))[0], np.full(3, 1 / 3)
        markers = mean_markers(figures["clusters.png"])
        np.testing.assert_allclose(markers.get_offsets(), means, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(markers.get_sizes(), plotting.MEAN_MARKER_SIZE * 3 * weights, rtol=1e-5)
    # The samples figure decodes the prior's draws, and the grid spans the expected values.
    np.testing.assert_array_equal(samples_z, expected_samples)
    np.testing.assert_allclose(np.unique(manifold_z[:, 0]), np.sort(expected_x), rtol=1e-5)
    np.testing.assert_allclose(np.unique(manifold_z[:, 1]), np.sort(expected_y), rtol=1e-5)

    plotting.save_all({tmp_path / name: fig for name, fig in figures.items()}, dpi=PLOT["dpi"])
    sizes = {name: imread(tmp_path / name).shape[:2] for name in figures}
    assert sizes["manifold.png"] == (240, 240) and sizes["samples.png"] == (180, 180)
    assert sizes["clusters.png"] == (210, 270)
    for name in figures:
        assert_not_blank(imread(tmp_path / name))
