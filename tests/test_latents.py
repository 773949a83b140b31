import re

import numpy as np
import pandas as pd
import pytest

from fashion_vae import latents
from fashion_vae.dataset import CLASS_NAMES
from fashion_vae.errors import PipelineError

HINT = re.escape("; re-run the encode stage (dvc repro encode)") + "$"


def test_csv_columns_rows_and_names(tmp_path):
    rng = np.random.default_rng(0)
    z, lv = rng.normal(size=(30, 3)), rng.normal(size=(30, 3))
    y = np.arange(30, dtype=np.uint8) % 10
    path = tmp_path / "latent.csv"
    latents.write_csv(latents.to_frame(z, lv, y), path)
    frame = pd.read_csv(path)
    assert list(frame.columns) == latents.columns(3) == [
        "index", "z0", "z1", "z2", "log_var0", "log_var1", "log_var2", "label", "class_name"
    ]
    assert len(frame) == 30 and frame["index"].tolist() == list(range(30))
    assert frame["class_name"].tolist() == [CLASS_NAMES[c] for c in y]
    np.testing.assert_allclose(latents.latent_matrix(latents.read_csv(path)), z, rtol=1e-5)
    checked = latents.read_csv(path, latent_dim=3, expected_labels=y)
    np.testing.assert_allclose(latents.latent_matrix(checked), z, rtol=1e-5)
    assert not {"rev", "filename", "field", "step"} & set(frame.columns)  # names DVC adds


def test_read_errors(tmp_path):
    with pytest.raises(PipelineError, match="none.csv: missing; run the encode stage"):
        latents.read_csv(tmp_path / "none.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(PipelineError, match=r"bad.csv: no column z0; expected columns index, z0\.\.z\(d-1\)"):
        latents.read_csv(tmp_path / "bad.csv")
    (tmp_path / "dir.csv").mkdir()
    expected = r"dir.csv: is a directory, not a regular file; run the encode stage \(dvc repro encode\)$"
    with pytest.raises(PipelineError, match=expected):
        latents.read_csv(tmp_path / "dir.csv")


@pytest.fixture
def good(tmp_path):
    """A 2-D latent CSV of 20 rows, its path and labels."""
    rng = np.random.default_rng(1)
    labels = (np.arange(20) * 3 % 10).astype(np.uint8)
    frame = latents.to_frame(rng.normal(size=(20, 2)), rng.normal(size=(20, 2)), labels)
    return frame, tmp_path / "latent.csv", labels


def write(frame, path):
    frame.to_csv(path, index=False)
    return path


EXPECTED_2D = re.escape(
    "expected columns index, z0..z1, log_var0..log_var1, label, class_name for the model's latent_dim = 2"
)


@pytest.mark.parametrize("change, problem", [
    (lambda f: f.drop(columns="z1"), "missing column z1"),
    (lambda f: f.assign(z2=0.5), "unexpected column z2"),
    (lambda f: f.drop(columns=["log_var0", "class_name"]), "missing column log_var0, class_name"),
    (lambda f: f[["index", "z1", "z0", "log_var0", "log_var1", "label", "class_name"]],
     "columns in the order index, z1, z0, log_var0, log_var1, label, class_name"),
])
def test_columns_must_be_exactly_those_of_the_models_latent_dim(good, change, problem):
    frame, path, labels = good
    write(change(frame), path)
    expected = rf"^{re.escape(str(path))}: {re.escape(problem)}; {EXPECTED_2D}{HINT}"
    with pytest.raises(PipelineError, match=expected):
        latents.read_csv(path, latent_dim=2, expected_labels=labels)


def test_latent_dim_of_another_model_is_refused(good):
    frame, path, labels = good
    write(frame, path)
    with pytest.raises(PipelineError, match=r"missing column z2, log_var2; expected columns index, z0\.\.z2, "
                                            r"log_var0\.\.log_var2, label, class_name for the model's "
                                            r"latent_dim = 3"):
        latents.read_csv(path, latent_dim=3, expected_labels=labels)
    one = latents.to_frame(np.zeros((20, 1)), np.zeros((20, 1)), labels)
    write(one, path)
    with pytest.raises(PipelineError, match=r"missing column z1, log_var1; " + EXPECTED_2D):
        latents.read_csv(path, latent_dim=2, expected_labels=labels)
    assert len(latents.read_csv(path, latent_dim=1, expected_labels=labels)) == 20
    write(frame, path)
    expected = re.escape("unexpected column z1, log_var1; expected columns index, z0, log_var0, label, "
                         "class_name for the model's latent_dim = 1")
    with pytest.raises(PipelineError, match=expected):
        latents.read_csv(path, latent_dim=1, expected_labels=labels)


def test_rows_must_match_the_test_split(good):
    frame, path, labels = good
    twice = pd.concat([frame, frame], ignore_index=True).assign(index=np.arange(40))
    write(twice, path)
    expected = r"latent\.csv: 40 data rows but data/prepared/test\.npz has 20 images" + HINT
    with pytest.raises(PipelineError, match=expected):
        latents.read_csv(path, 2, labels, "data/prepared/test.npz")
    assert len(latents.read_csv(path, 2)) == 40  # without a test split to compare, only the file is checked


def test_labels_must_match_the_test_split(good):
    frame, path, labels = good
    swapped = frame.copy()
    swapped.loc[[3, 4], "label"] = labels[[4, 3]]
    write(swapped, path)
    expected = rf"data row 4 has label {labels[4]} but image 3 of test\.npz has label {labels[3]} "
    expected += r"\(2 rows differ\)"
    with pytest.raises(PipelineError, match=expected + HINT):
        latents.read_csv(path, 2, labels, "test.npz")


def test_index_and_log_var_are_checked(good):
    frame, path, labels = good
    shifted = frame.assign(index=np.arange(1, 21))
    write(shifted, path)
    with pytest.raises(PipelineError, match=r"column index data row 1 is '1'; expected 0$"):
        latents.read_csv(path, 2, labels)
    bad = frame.copy()
    bad.loc[7, "log_var1"] = np.inf
    write(bad, path)
    expected = r"column log_var1 data row 8 is 'inf'; expected a finite number$"
    with pytest.raises(PipelineError, match=expected):
        latents.read_csv(path, 2, labels)
