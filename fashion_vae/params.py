"""Load and validate ``params.yaml`` before any stage does work.

Every key is declared here with its type and allowed range. Unknown keys, missing keys,
wrong types and out-of-range values raise a :class:`PipelineError` whose single line
names the key, the value and what is allowed.

The file is parsed exactly as DVC parses it (ruamel.yaml's safe loader, YAML 1.2), so a
stage trains with the values that ``dvc.lock`` and ``dvc params diff`` record: ``010`` is
10 and ``off`` is a string, as they are to DVC. Duplicate keys and aliases are refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent

from fashion_vae import files, resources
from fashion_vae.errors import PipelineError

PARAMS_FILE = "params.yaml"
MAX_PARAMS_BYTES = 1 << 20  # a params file is a few KiB; refuse anything absurd before parsing
QUOTE_CHARS = 60  # error messages quote at most this much of a bad value
TRAIN_IMAGES = 60_000  # the official training set, before prepare's limit and validation split
N_CLASSES = 10


def quote(value: Any) -> str:
    """``repr(value)`` cut to :data:`QUOTE_CHARS`, so an error line stays one short line."""
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 3] + "..."


@dataclass(frozen=True)
class Rule:
    """How one key is checked: ``check`` returns the value or raises ``ValueError``.

    Numeric keys also say their range (``low``/``high``, open or closed, and whether the
    value is an integer, a list of them or a number), so a test can run every key at the
    largest and smallest value validation accepts. ``why`` says why the bound is where it is.
    """

    expected: str
    check: Callable[[Any], Any]
    optional: bool = False  # ``null`` allowed
    kind: str = "other"  # "int", "number", "int_list" for numeric keys
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    why: str = ""


def _integer(value: Any, low: int | None, high: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError
    return value


def _number(value: Any, low: float | None, high: float | None, low_open: bool, high_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError
    return float(value)


def integer(low: int, high: int, optional: bool = False, why: str = "") -> Rule:
    expected = f"an integer in [{low}, {high}]" + (" or null" if optional else "") + (f" ({why})" if why else "")
    return Rule(expected, lambda v: _integer(v, low, high), optional, "int", low, high, why=why)


def number(low: float, high: float, low_open: bool = False, high_open: bool = False, why: str = "") -> Rule:
    expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    expected += f" ({why})" if why else ""
    return Rule(expected, lambda v: _number(v, low, high, low_open, high_open), kind="number", low=low, high=high,
                low_open=low_open, high_open=high_open, why=why)


def choice(*options: str) -> Rule:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError
        return value

    return Rule("one of " + ", ".join(repr(o) for o in options), check)


def int_list(low: int, high: int, length: int | None = None, min_length: int = 1, why: str = "") -> Rule:
    size = f"{length}" if length is not None else f"at least {min_length}"
    expected = f"a list of {size} integers in [{low}, {high}]" + (f" ({why})" if why else "")

    def check(value: Any) -> list[int]:
        if not isinstance(value, list):
            raise ValueError
        if (length is not None and len(value) != length) or len(value) < min_length:
            raise ValueError
        return [_integer(v, low, high) for v in value]

    return Rule(expected, check, kind="int_list", low=low, high=high, why=why)


def string_list() -> Rule:
    def check(value: Any) -> list[str]:
        if not isinstance(value, list) or not value:
            raise ValueError
        if not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError
        return value

    return Rule("a non-empty list of directory paths or URLs", check)


# What numpy, scikit-learn (random_state) and TensorFlow all accept as a seed.
SEED = integer(0, 2**32 - 1, why="what numpy, scikit-learn and TensorFlow accept as a seed")
MAX_EPOCHS = 500  # 2 hours of the default on a 2-core CPU (40 epochs: 9 minutes)

SCHEMA: dict[str, dict[str, Rule]] = {
    "fetch": {
        "sources": string_list(),
        "timeout_s": number(0, 3600, low_open=True, why="seconds per download; an hour means it has failed"),
    },
    "prepare": {
        "val_size": integer(N_CLASSES, TRAIN_IMAGES - N_CLASSES, why="stratified: one image per class or more"),
        "seed": SEED,
        "limit_train": integer(2 * N_CLASSES, TRAIN_IMAGES, optional=True, why="two images per class or more"),
        "limit_test": integer(
            2 * N_CLASSES, 10_000, optional=True, why="two per class or more: the silhouette score needs them"
        ),
    },
    "model": {
        "latent_dim": integer(2, 512, why="the manifold and cluster plots need two latent directions"),
        "conv_filters": int_list(1, 4096, length=2),
        "kernel_size": integer(1, 7),
        # Widths are bounded again by memory (fashion_vae/resources.py): these bounds only keep
        # the arithmetic sane.
        "dense_units": integer(1, 1 << 20),
        "decoder_dense_units": integer(0, 1 << 20),
        "beta": number(0, 1000, why="weight of the KL term; beyond 1000 the posterior is the prior"),
        "prior": choice("normal", "mixture", "vamp"),
        "prior_components": integer(1, 1000),
    },
    "train": {
        "seed": SEED,
        "epochs": integer(1, MAX_EPOCHS),
        "batch_size": integer(1, TRAIN_IMAGES),
        "learning_rate": number(0, 1, low_open=True),
        "lr_schedule": choice("constant", "cosine"),
        "warmup_epochs": integer(0, MAX_EPOCHS - 1),
        "objective": choice("elbo", "iwae"),
        "iwae_samples": integer(1, 1000),
        "precision": choice("float32", "mixed_bfloat16", "mixed_float16"),
        "steps_per_execution": integer(1, 10_000, why="steps per call into TensorFlow; capped at an epoch's"),
        "threads": integer(1, 256),
        "distribute": choice("none", "mirrored", "multi_worker"),
        "worker_timeout_s": number(0, 86400, low_open=True),
    },
    "evaluate": {
        "seed": SEED,
        "iwae_samples": integer(1, 5000, why="K of the IWAE bound; 5,000 (Burda et al.'s) takes hours on the full test set"),
        "batch_size": integer(1, 1_000_000),
        "knn_k": int_list(1, TRAIN_IMAGES, min_length=1),
    },
    "plot": {
        "seed": SEED,
        "manifold_n": integer(1, 64),
        "manifold_spacing": choice("quantile", "range"),
        "manifold_quantile": number(0, 0.5, low_open=True, high_open=True),
        "manifold_range": number(0, 100, low_open=True, why="a radius in latent standard deviations"),
        "reconstructions_per_class": integer(1, 20),
        "samples_n": integer(1, 400),
        "dpi": integer(20, 600),
    },
}


def validate(raw: Any, source: str = PARAMS_FILE) -> dict[str, dict[str, Any]]:
    """Check a parsed params mapping against :data:`SCHEMA`; return the clean values."""
    if not isinstance(raw, dict):
        raise PipelineError(f"{source}: expected a mapping of sections {sorted(SCHEMA)}, got {type(raw).__name__}")
    unknown = sorted(set(map(str, raw)) - set(SCHEMA))
    if unknown:
        raise PipelineError(
            f"{source}: unknown section {quote(unknown[0])}; allowed sections: {', '.join(SCHEMA)}"
        )
    clean: dict[str, dict[str, Any]] = {}
    for section, rules in SCHEMA.items():
        values = raw.get(section)
        if not isinstance(values, dict):
            raise PipelineError(f"{source}: section {section!r} is missing or not a mapping")
        unknown = sorted(set(map(str, values)) - set(rules))
        if unknown:
            raise PipelineError(
                f"{source}: unknown key {section}.{unknown[0][:QUOTE_CHARS]}; allowed keys in {section!r}: {', '.join(rules)}"
            )
        clean[section] = {}
        for key, rule in rules.items():
            if key not in values:
                raise PipelineError(f"{source}: missing key {section}.{key} (expected {rule.expected})")
            value = values[key]
            if value is None and rule.optional:
                clean[section][key] = None
                continue
            try:
                clean[section][key] = rule.check(value)
            except (ValueError, TypeError):
                raise PipelineError(
                    f"{source}: {section}.{key} = {quote(value)} is invalid; expected {rule.expected}"
                ) from None
    _check_cross_field(clean, source)
    return clean


def _check_cross_field(params: dict[str, dict[str, Any]], source: str) -> None:
    train = params["train"]
    if train["warmup_epochs"] >= train["epochs"] and train["warmup_epochs"] > 0:
        raise PipelineError(
            f"{source}: train.warmup_epochs = {train['warmup_epochs']} must be less than "
            f"train.epochs = {train['epochs']}"
        )
    prepare = params["prepare"]
    limit, val_size = prepare["limit_train"], prepare["val_size"]
    if limit is not None and val_size >= limit:
        raise PipelineError(
            f"{source}: prepare.val_size = {val_size} must be less than prepare.limit_train = {limit}"
        )
    train_images = (limit or TRAIN_IMAGES) - val_size
    if train_images < N_CLASSES:
        raise PipelineError(
            f"{source}: prepare.limit_train = {limit} leaves {train_images} training images after "
            f"prepare.val_size = {val_size}; expected at least {N_CLASSES} (one per class)"
        )
    if train["objective"] == "elbo" and train["iwae_samples"] != 1:
        raise PipelineError(
            f"{source}: train.iwae_samples = {train['iwae_samples']} has no effect with train.objective = 'elbo'; "
            "set train.objective to 'iwae' or train.iwae_samples to 1"
        )
    largest_k = max(params["evaluate"]["knn_k"])
    if largest_k > train_images:
        raise PipelineError(
            f"{source}: evaluate.knn_k = {largest_k} is more than the {train_images} training images "
            "(prepare.limit_train minus prepare.val_size) the k-NN classifier is fitted on"
        )
    too_big = resources.problems(params)  # memory is part of what a value must satisfy
    if too_big:
        raise PipelineError(f"{source}: {too_big}")


def parse(text: str, source: str = PARAMS_FILE) -> Any:
    """Parse YAML as DVC does (ruamel.yaml, safe, YAML 1.2); refuse aliases and duplicate keys.

    Aliases are refused before anything is built: nested ones ("billion laughs") would
    expand into gigabytes the moment a value is printed or compared.
    """
    yaml = YAML(typ="safe")
    try:
        for event in yaml.parse(text):
            if isinstance(event, AliasEvent):
                mark = event.start_mark
                raise PipelineError(
                    f"{source}: YAML alias *{str(event.anchor)[:QUOTE_CHARS]} at line {mark.line + 1}, "
                    f"column {mark.column + 1}; write each value out in full (anchors and aliases are not allowed)"
                )
        return yaml.load(text)
    except MarkedYAMLError as err:
        where = err.problem_mark or err.context_mark
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        if "duplicate key" in str(err.problem):
            key = str(err.problem).split('"')[1] if '"' in str(err.problem) else "?"
            raise PipelineError(
                f"{source}: duplicate key {key[:QUOTE_CHARS]!r}{at}; each key may appear once in a mapping"
            ) from None
        raise PipelineError(f"{source}: not valid YAML{at}") from None
    except YAMLError:
        raise PipelineError(f"{source}: not valid YAML") from None


def load(path: str | Path = PARAMS_FILE) -> dict[str, dict[str, Any]]:
    """Read and validate the whole params file."""
    # A regular file of sane size: a symlink to /dev/zero or a FIFO would be read without end.
    path = files.require_regular_file(path, MAX_PARAMS_BYTES, "run from the repository root")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: cannot read ({err.__class__.__name__}: {err})") from None
    return validate(parse(text, str(path)), str(path))


def load_section(section: str, path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Validate the whole file, return one section (what a stage's ``main`` needs)."""
    return load(path)[section]
