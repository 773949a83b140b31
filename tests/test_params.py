import copy
from pathlib import Path

import pytest
import yaml

from fashion_vae import params
from fashion_vae.errors import PipelineError

DEFAULTS = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())


def test_committed_params_are_valid():
    clean = params.load(Path(__file__).parents[1] / "params.yaml")
    assert clean["model"]["latent_dim"] >= 1
    assert set(clean) == set(params.SCHEMA)


def with_value(section, key, value):
    raw = copy.deepcopy(DEFAULTS)
    raw[section][key] = value
    return raw


BAD_VALUES = [
    ("model", "latent_dim", 0, r"model\.latent_dim = 0 is invalid; expected an integer >= 1"),
    ("model", "latent_dim", 2.5, r"model\.latent_dim = 2\.5 is invalid"),
    ("model", "latent_dim", True, r"model\.latent_dim = True is invalid"),
    ("model", "beta", -0.1, r"model\.beta = -0\.1 is invalid; expected a number >= 0"),
    ("model", "conv_filters", [32], r"model\.conv_filters = \[32\] is invalid; expected a list of 2 integers"),
    ("model", "conv_filters", [32, -1], r"model\.conv_filters = \[32, -1\] is invalid"),
    ("model", "kernel_size", 0, r"model\.kernel_size = 0 is invalid; expected an integer in \[1, 7\]"),
    ("model", "dense_units", "16", r"model\.dense_units = '16' is invalid"),
    ("train", "learning_rate", "fast", r"train\.learning_rate = 'fast' is invalid; expected a number in \(0, 1\]"),
    ("train", "learning_rate", 0, r"train\.learning_rate = 0 is invalid"),
    ("train", "learning_rate", float("nan"), r"train\.learning_rate = nan is invalid"),
    ("train", "batch_size", -8, r"train\.batch_size = -8 is invalid"),
    ("train", "epochs", 0, r"train\.epochs = 0 is invalid"),
    ("train", "lr_schedule", "step", r"train\.lr_schedule = 'step' is invalid; expected one of 'constant', 'cosine'"),
    ("train", "distribute", "tpu", r"train\.distribute = 'tpu' is invalid"),
    ("evaluate", "iwae_samples", 0, r"evaluate\.iwae_samples = 0 is invalid"),
    ("evaluate", "knn_k", [], r"evaluate\.knn_k = \[\] is invalid"),
    ("plot", "manifold_n", 0, r"plot\.manifold_n = 0 is invalid; expected an integer in \[1, 64\]"),
    ("plot", "manifold_quantile", 0.5, r"plot\.manifold_quantile = 0\.5 is invalid"),
    ("prepare", "limit_train", 0, r"prepare\.limit_train = 0 is invalid; expected an integer >= 1 or null"),
    ("fetch", "sources", [], r"fetch\.sources = \[\] is invalid"),
    ("fetch", "timeout_s", 0, r"fetch\.timeout_s = 0 is invalid"),
]


@pytest.mark.parametrize("section,key,value,message", BAD_VALUES, ids=[f"{s}.{k}={v!r}" for s, k, v, _ in BAD_VALUES])
def test_bad_values_are_named(section, key, value, message):
    with pytest.raises(PipelineError, match=message) as err:
        params.validate(with_value(section, key, value))
    assert "\n" not in str(err.value)


def test_unknown_and_missing_keys():
    raw = with_value("train", "epoch", 3)
    with pytest.raises(PipelineError, match=r"unknown key train\.epoch; allowed keys in 'train': seed, epochs"):
        params.validate(raw)
    raw = copy.deepcopy(DEFAULTS)
    del raw["model"]["beta"]
    with pytest.raises(PipelineError, match=r"missing key model\.beta \(expected a number >= 0\)"):
        params.validate(raw)
    raw = copy.deepcopy(DEFAULTS)
    raw["extra"] = {}
    with pytest.raises(PipelineError, match="unknown section 'extra'"):
        params.validate(raw)
    raw = copy.deepcopy(DEFAULTS)
    del raw["plot"]
    with pytest.raises(PipelineError, match="section 'plot' is missing"):
        params.validate(raw)


def test_cross_field_rules():
    raw = with_value("prepare", "limit_train", 100)
    raw["prepare"]["val_size"] = 100
    with pytest.raises(PipelineError, match=r"prepare\.val_size = 100 must be less than prepare\.limit_train = 100"):
        params.validate(raw)
    raw = with_value("train", "warmup_epochs", DEFAULTS["train"]["epochs"])
    with pytest.raises(PipelineError, match="warmup_epochs"):
        params.validate(raw)


def test_unreadable_files(tmp_path):
    with pytest.raises(PipelineError, match="params.yaml: file not found"):
        params.load(tmp_path / "params.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(PipelineError, match=r"params.yaml: not valid YAML at line \d+"):
        params.load(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(PipelineError, match="expected a mapping of sections"):
        params.load(bad)
    bad.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(PipelineError, match="cannot read"):
        params.load(bad)
