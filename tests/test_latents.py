import numpy as np
import pandas as pd
import pytest

from fashion_vae import latents
from fashion_vae.dataset import CLASS_NAMES
from fashion_vae.errors import PipelineError


def test_csv_columns_rows_and_names(tmp_path):
    rng = np.random.default_rng(0)
    z, lv = rng.normal(size=(30, 3)), rng.normal(size=(30, 3))
    y = np.arange(30, dtype=np.uint8) % 10
    path = tmp_path / "latent.csv"
    latents.write_csv(latents.to_frame(z, lv, y), path)
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["index", "z0", "z1", "z2", "log_var0", "log_var1", "log_var2", "label", "class_name"]
    assert len(frame) == 30 and frame["index"].tolist() == list(range(30))
    assert frame["class_name"].tolist() == [CLASS_NAMES[c] for c in y]
    np.testing.assert_allclose(latents.latent_matrix(latents.read_csv(path)), z, rtol=1e-5)
    assert not {"rev", "filename", "field", "step"} & set(frame.columns)  # names DVC adds


def test_read_errors(tmp_path):
    with pytest.raises(PipelineError, match="missing; run the encode stage"):
        latents.read_csv(tmp_path / "none.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(PipelineError, match="bad.csv: expected columns"):
        latents.read_csv(tmp_path / "bad.csv")
