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
    ("model", "latent_dim", 0, r"model\.latent_dim = 0 is invalid; expected an integer in \[2, 512\] \(the manifold"),
    ("model", "latent_dim", 1, r"model\.latent_dim = 1 is invalid; expected an integer in \[2, 512\] \(the manifold and "
     r"cluster plots need two latent directions\)$"),
    ("model", "latent_dim", 2.5, r"model\.latent_dim = 2\.5 is invalid"),
    ("model", "latent_dim", True, r"model\.latent_dim = True is invalid"),
    ("model", "beta", -0.1, r"model\.beta = -0\.1 is invalid; expected a number in \[0, 1000\] \(weight of the KL term"),
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
    ("train", "worker_timeout_s", 0, r"train\.worker_timeout_s = 0 is invalid; expected a number in \(0, 86400\]$"),
    ("train", "worker_timeout_s", -5, r"train\.worker_timeout_s = -5 is invalid"),
    ("train", "worker_timeout_s", "2m", r"train\.worker_timeout_s = '2m' is invalid"),
    ("evaluate", "iwae_samples", 0, r"evaluate\.iwae_samples = 0 is invalid"),
    ("evaluate", "knn_k", [], r"evaluate\.knn_k = \[\] is invalid"),
    ("plot", "manifold_n", 0, r"plot\.manifold_n = 0 is invalid; expected an integer in \[1, 64\]"),
    ("plot", "manifold_quantile", 0.5, r"plot\.manifold_quantile = 0\.5 is invalid"),
    ("prepare", "limit_train", 0, r"prepare\.limit_train = 0 is invalid; expected an integer in \[20, 60000\] "
     r"or null \(two images per class or more\)$"),
    ("prepare", "limit_train", 5, r"prepare\.limit_train = 5 is invalid"),
    ("prepare", "limit_test", 10, r"prepare\.limit_test = 10 is invalid; expected an integer in \[20, 10000\] or "
     r"null \(two per class or more: the silhouette score needs them\)$"),
    ("prepare", "limit_test", 5, r"prepare\.limit_test = 5 is invalid"),
    ("prepare", "val_size", 5, r"prepare\.val_size = 5 is invalid; expected an integer in \[10, 59990\] "
     r"\(stratified: one image per class or more\)$"),
    ("train", "lr_schedule", "x" * 10_000, r"train\.lr_schedule = 'x{56}\.\.\. is invalid; expected one of"),
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
    with pytest.raises(PipelineError, match=r"missing key model\.beta \(expected a number in \[0, 1000\] \(weight of the KL term"):
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
    raw = with_value("prepare", "limit_train", 25)
    raw["prepare"]["val_size"] = 20
    with pytest.raises(PipelineError, match=r"prepare\.limit_train = 25 leaves 5 training images after "
                       r"prepare\.val_size = 20; expected at least 10 \(one per class\)$"):
        params.validate(raw)
    raw = with_value("prepare", "limit_train", 300)
    raw["prepare"]["val_size"] = 100
    raw["evaluate"]["knn_k"] = [1, 201]
    with pytest.raises(PipelineError, match=r"evaluate\.knn_k = 201 is more than the 200 training images"):
        params.validate(raw)
    raw["evaluate"]["knn_k"] = [1, 200]
    params.validate(raw)


def write(tmp_path, text: str):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


DEFAULT_TEXT = (Path(__file__).parents[1] / "params.yaml").read_text()


def test_yaml_1_2_as_dvc_reads_it(tmp_path):
    """`epochs: 010` is 10 to DVC (YAML 1.2), so it is 10 here too; `off` is a string, not False."""
    from dvc.utils.serialize import parse_yaml

    text = DEFAULT_TEXT.replace("epochs: 40", "epochs: 010")
    assert parse_yaml(text, "params.yaml")["train"]["epochs"] == 10
    assert params.load(write(tmp_path, text))["train"]["epochs"] == 10
    off = DEFAULT_TEXT.replace("distribute: none", "distribute: off")
    with pytest.raises(PipelineError, match=r"train\.distribute = 'off' is invalid; expected one of 'none'"):
        params.load(write(tmp_path, off))


def test_duplicate_keys_are_refused(tmp_path):
    text = DEFAULT_TEXT.replace("  epochs: 40\n", "  epochs: 40\n  epochs: 3\n")
    line = text.splitlines().index("  epochs: 3") + 1
    with pytest.raises(PipelineError, match=rf"params\.yaml: duplicate key 'epochs' at line {line}, column 3; "
                       r"each key may appear once in a mapping$"):
        params.load(write(tmp_path, text))


def test_aliases_are_refused_before_they_expand(tmp_path):
    """A 'billion laughs' file: nine aliases per level, 9**12 leaves if it were expanded."""
    text = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for level in range(1, 13):
        previous, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        text += f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]\n"
    with pytest.raises(PipelineError, match=r"YAML alias \*a at line 2, column \d+; write each value out in full") as err:
        params.load(write(tmp_path, text))
    assert len(str(err.value)) < 200


def test_huge_file_is_refused_unread(tmp_path):
    path = write(tmp_path, "# " + "x" * (params.MAX_PARAMS_BYTES + 10) + "\n")
    with pytest.raises(PipelineError, match=r"params\.yaml: \d+ bytes is larger than the 1 MiB limit for this file"):
        params.load(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(PipelineError, match="params.yaml: missing; run from the repository root$"):
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
