"""prepare on the real data, and the checks of the .npz loader."""
import numpy as np
import pytest

from fashion_vae import dataset, prepared
from fashion_vae.errors import PipelineError


@pytest.fixture(scope="module")
def splits(raw_dir):
    raw = {key: dataset.load_raw(raw_dir, key) for key in dataset.RAW_FILES}
    return prepared.build_splits(
        raw["train_images"], raw["train_labels"], raw["test_images"], raw["test_labels"], val_size=5000, seed=42
    )


def test_real_splits(splits):
    (xt, yt), (xv, yv), (xs, ys) = splits["train"], splits["val"], splits["test"]
    assert len(xt) + len(xv) == 60_000 and len(xv) == 5000 and len(xs) == 10_000
    for x, y in splits.values():
        assert x.dtype == np.float32 and x.shape[1:] == (28, 28, 1)
        assert y.dtype == np.uint8 and 0.0 <= x.min() and x.max() <= 1.0
        assert set(np.unique(y)) == set(range(10))
    full_mean = np.concatenate([xt, xv]).mean(dtype=np.float64)
    assert abs(full_mean - 0.2860) <= 0.0005
    assert np.all(np.bincount(yv) == 500)  # stratified: 5000 / 10 classes


def test_split_is_seeded(raw_dir):
    labels = dataset.load_raw(raw_dir, "train_labels")[:2000]
    images = np.zeros((2000, 28, 28), np.uint8)
    images[:, 0, 0] = np.arange(2000) % 251
    a = prepared.build_splits(images, labels, images[:10], labels[:10], val_size=200, seed=1)
    b = prepared.build_splits(images, labels, images[:10], labels[:10], val_size=200, seed=1)
    c = prepared.build_splits(images, labels, images[:10], labels[:10], val_size=200, seed=2)
    assert np.array_equal(a["val"][0], b["val"][0])
    assert not np.array_equal(a["val"][0], c["val"][0])


def test_limits_take_stratified_subsets(raw_dir):
    raw = {key: dataset.load_raw(raw_dir, key) for key in dataset.RAW_FILES}
    s = prepared.build_splits(
        raw["train_images"], raw["train_labels"], raw["test_images"], raw["test_labels"],
        val_size=100, seed=0, limit_train=1000, limit_test=300,
    )
    assert len(s["train"][0]) == 900 and len(s["val"][0]) == 100 and len(s["test"][0]) == 300
    assert np.all(np.bincount(s["test"][1]) == 30)


def test_val_size_out_of_range():
    y = np.repeat(np.arange(10, dtype=np.uint8), 5)
    x = np.zeros((50, 28, 28), np.uint8)
    with pytest.raises(PipelineError, match=r"prepare\.val_size = 45 must be between 10 and 40"):
        prepared.build_splits(x, y, x, y, val_size=45, seed=0)


def test_save_and_load(tmp_path):
    x = np.random.default_rng(0).random((20, 28, 28, 1), dtype=np.float32)
    y = np.arange(20, dtype=np.uint8) % 10
    prepared.save_split(tmp_path / "a.npz", x, y)
    x2, y2 = prepared.load_split(tmp_path / "a.npz")
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    with np.load(tmp_path / "a.npz") as archive:
        assert list(archive["class_names"]) == list(dataset.CLASS_NAMES)


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"y": np.zeros(3, np.uint8)}, "array 'x' missing"),
        ({"x": np.zeros((3, 28, 28, 1), np.float64), "y": np.zeros(3, np.uint8)}, "x has dtype float64"),
        ({"x": np.zeros((3, 28, 28), np.float32), "y": np.zeros(3, np.uint8)}, r"shape \(3, 28, 28\)"),
        ({"x": np.zeros((3, 28, 28, 1), np.float32), "y": np.zeros(4, np.uint8)}, "y has dtype uint8 and shape"),
        ({"x": np.zeros((3, 28, 28, 1), np.float32), "y": np.array([0, 10, 2], np.uint8)}, "label 10 outside 0..9"),
        ({"x": np.full((3, 28, 28, 1), 255, np.float32), "y": np.zeros(3, np.uint8)}, r"pixel values span \[255"),
    ],
)
def test_load_rejects_bad_arrays(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(PipelineError, match=message):
        prepared.load_split(path)


def test_load_refuses_pickles_and_garbage(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object), y=np.zeros(1, np.uint8))
    with pytest.raises(PipelineError, match="obj.npz: not a readable .npz file"):
        prepared.load_split(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(PipelineError, match="junk.npz: not a readable .npz file"):
        prepared.load_split(tmp_path / "junk.npz")
