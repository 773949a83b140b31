"""Load and validate ``params.yaml`` before any stage does work.

Every key is declared here with its type and allowed range. Unknown keys, missing keys,
wrong types and out-of-range values raise a :class:`PipelineError` whose single line
names the key, the value and what is allowed.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from fashion_vae.errors import PipelineError

PARAMS_FILE = "params.yaml"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, also reading ``1e-05`` as a float (YAML 1.2, as DVC does).

    PyYAML follows YAML 1.1, where a float needs a dot, so ``1e-05`` would be a string;
    but DVC (ruamel.yaml) writes small floats that way, e.g. after
    ``dvc exp run -S train.learning_rate=1e-5``.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


@dataclass(frozen=True)
class Rule:
    """How one key is checked: ``check`` returns the value or raises ``ValueError``."""

    expected: str
    check: Callable[[Any], Any]
    optional: bool = False  # ``null`` allowed


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


def integer(low: int | None = None, high: int | None = None, optional: bool = False) -> Rule:
    if high is None:
        expected = f"an integer >= {low}" if low is not None else "an integer"
    else:
        expected = f"an integer in [{low}, {high}]"
    if optional:
        expected += " or null"
    return Rule(expected, lambda v: _integer(v, low, high), optional)


def number(
    low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False
) -> Rule:
    if low is None:
        expected = "a number"
    elif high is None:
        expected = f"a number {'>' if low_open else '>='} {low}"
    else:
        expected = f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    return Rule(expected, lambda v: _number(v, low, high, low_open, high_open))


def choice(*options: str) -> Rule:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError
        return value

    return Rule("one of " + ", ".join(repr(o) for o in options), check)


def int_list(low: int, length: int | None = None, min_length: int = 1) -> Rule:
    size = f"{length}" if length is not None else f"at least {min_length}"
    expected = f"a list of {size} integers >= {low}"

    def check(value: Any) -> list[int]:
        if not isinstance(value, list):
            raise ValueError
        if (length is not None and len(value) != length) or len(value) < min_length:
            raise ValueError
        return [_integer(v, low, None) for v in value]

    return Rule(expected, check)


def string_list() -> Rule:
    def check(value: Any) -> list[str]:
        if not isinstance(value, list) or not value:
            raise ValueError
        if not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError
        return value

    return Rule("a non-empty list of directory paths or URLs", check)


SCHEMA: dict[str, dict[str, Rule]] = {
    "fetch": {
        "sources": string_list(),
        "timeout_s": number(0, low_open=True),
    },
    "prepare": {
        "val_size": integer(1),
        "seed": integer(0),
        "limit_train": integer(1, optional=True),
        "limit_test": integer(1, optional=True),
    },
    "model": {
        "latent_dim": integer(1),
        "conv_filters": int_list(1, length=2),
        "kernel_size": integer(1, 7),
        "dense_units": integer(1),
        "decoder_dense_units": integer(0),
        "beta": number(0),
    },
    "train": {
        "seed": integer(0),
        "epochs": integer(1),
        "batch_size": integer(1),
        "learning_rate": number(0, 1, low_open=True),
        "lr_schedule": choice("constant", "cosine"),
        "warmup_epochs": integer(0),
        "steps_per_execution": integer(1),
        "threads": integer(1, 256),
        "distribute": choice("none", "mirrored"),
    },
    "evaluate": {
        "seed": integer(0),
        "iwae_samples": integer(1),
        "batch_size": integer(1),
        "knn_k": int_list(1, min_length=1),
    },
    "plot": {
        "seed": integer(0),
        "manifold_n": integer(1, 64),
        "manifold_spacing": choice("quantile", "range"),
        "manifold_quantile": number(0, 0.5, low_open=True, high_open=True),
        "manifold_range": number(0, low_open=True),
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
        raise PipelineError(f"{source}: unknown section {unknown[0]!r}; allowed sections: {', '.join(SCHEMA)}")
    clean: dict[str, dict[str, Any]] = {}
    for section, rules in SCHEMA.items():
        values = raw.get(section)
        if not isinstance(values, dict):
            raise PipelineError(f"{source}: section {section!r} is missing or not a mapping")
        unknown = sorted(set(map(str, values)) - set(rules))
        if unknown:
            raise PipelineError(
                f"{source}: unknown key {section}.{unknown[0]}; allowed keys in {section!r}: {', '.join(rules)}"
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
                    f"{source}: {section}.{key} = {value!r} is invalid; expected {rule.expected}"
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
    limit = prepare["limit_train"]
    if limit is not None and prepare["val_size"] >= limit:
        raise PipelineError(
            f"{source}: prepare.val_size = {prepare['val_size']} must be less than "
            f"prepare.limit_train = {limit}"
        )


def load(path: str | Path = PARAMS_FILE) -> dict[str, dict[str, Any]]:
    """Read and validate the whole params file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found; run from the repository root") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: cannot read ({err.__class__.__name__}: {err})") from None
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise PipelineError(f"{path}: not valid YAML{at}") from None
    return validate(raw, str(path))


def load_section(section: str, path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Validate the whole file, return one section (what a stage's ``main`` needs)."""
    return load(path)[section]
