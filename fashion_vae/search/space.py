"""``search.yaml``: which ``params.yaml`` keys a study searches, and the study's settings.

Read and validated before anything runs, in the style of ``params.yaml``: the file is
parsed as DVC parses YAML (aliases and duplicate keys refused), and every problem stops
with one line naming the file, the key and what is allowed. Each searched range is
checked against ``params.yaml``'s own validation at its ends (and each choice), so a
study never asks for a value that a stage would refuse.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fashion_vae import files, params
from fashion_vae.errors import PipelineError

SEARCH_FILE = "search.yaml"
MAX_SEARCH_BYTES = 1 << 20
KINDS = ("float", "log-float", "int", "categorical")
STUDY_KEYS = {
    "name": "a study name: letters, digits, '-' and '_' (it prefixes every experiment name)",
    "trials": "an integer in [1, 10000]: trials to finish, completed or failed",
    "seeds": "a non-empty list of distinct train.seed values: each trial runs one experiment per seed",
    "startup_trials": "an integer in [0, 10000]: random trials before the sampler models the results",
    "sampler_seed": "an integer in [0, 4294967295]: seeds the sampler, so the same results give the same trials",
    "jobs": "an integer in [1, 64]: DVC queue workers (dvc queue start -j)",
    "fixed": "a mapping of params.yaml keys to the value every trial gets (a per-trial cap such as train.epochs)",
    "targets": "the stages each experiment runs up to (dvc exp run TARGET...), e.g. [evaluate]; [] = the whole pipeline",
}
OPTIONAL_STUDY_KEYS = {"targets": []}
SPEC_KEYS = {"kind", "low", "high", "choices"}
# What a trial is scored on, read from metrics/eval.json: (name, key path, direction).
OBJECTIVES = (("iwae_nll", ("iwae_nll",), "minimize"), ("knn5", ("knn", "k5"), "maximize"))
SEED_KEY = "train.seed"
STAGES = ("fetch", "prepare", "train", "evaluate", "encode", "plot")  # dvc.yaml's stages


@dataclass(frozen=True)
class Dimension:
    """One searched params.yaml key."""

    key: str  # "section.name"
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple = ()  # categorical: lists are stored in Optuna as their JSON text

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "categorical":
            return CategoricalDistribution([encode_choice(c) for c in self.choices])
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high))
        return FloatDistribution(float(self.low), float(self.high), log=self.kind == "log-float")

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return self.low <= value <= self.high and (self.kind != "int" or isinstance(value, int))


@dataclass(frozen=True)
class SearchSpace:
    name: str
    trials: int
    seeds: tuple[int, ...]
    startup_trials: int
    sampler_seed: int
    jobs: int
    fixed: dict[str, Any] = field(default_factory=dict)
    targets: tuple[str, ...] = ()
    dimensions: tuple[Dimension, ...] = ()
    text: str = ""  # the file as written, for the study's record

    def distributions(self) -> dict:
        return {d.key: d.distribution() for d in self.dimensions}

    def params_of(self, suggested: dict) -> dict[str, Any]:
        """A trial's params.yaml values: its suggestions (choices decoded) and the fixed ones."""
        decoded = {key: decode_choice(value) for key, value in suggested.items()}
        return {**self.fixed, **decoded}

    def default_trial(self, cfg: dict) -> dict | None:
        """params.yaml's current values of the searched keys, if the space holds them all."""
        values = {d.key: lookup(cfg, d.key) for d in self.dimensions}
        if not all(d.contains(values[d.key]) for d in self.dimensions):
            return None
        return {key: encode_choice(value) for key, value in values.items()}


def encode_choice(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list) else value


def decode_choice(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("["):
        return json.loads(value)
    return value


def lookup(cfg: dict, key: str) -> Any:
    section, name = key.split(".", 1)
    return cfg[section][name]


def with_values(raw: dict, values: dict[str, Any]) -> dict:
    """A copy of a parsed params.yaml with ``values`` ("section.name" keys) set."""
    out = {section: dict(keys) if isinstance(keys, dict) else keys for section, keys in raw.items()}
    for key, value in values.items():
        section, name = key.split(".", 1)
        out[section][name] = value
    return out


def _fail(source: str, where: str, problem: str) -> PipelineError:
    return PipelineError(f"{source}: {where}: {problem}" if where else f"{source}: {problem}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def params_key(raw_params: dict, key: Any, source: str, where: str) -> str:
    if not isinstance(key, str) or key.count(".") != 1:
        raise _fail(source, where, f"{params.quote(key)} is not a params.yaml key; expected section.name")
    section, name = key.split(".")
    if not isinstance(raw_params.get(section), dict) or name not in raw_params[section]:
        raise _fail(source, where, f"params.yaml has no key {key}")
    return key


def check_accepted(raw_params: dict, values: dict[str, Any], source: str, where: str, subject: str) -> None:
    """``values`` must pass params.yaml's validation (what a stage would check first)."""
    try:
        params.validate(with_values(raw_params, values), params.PARAMS_FILE)
    except PipelineError as err:
        reason = str(err).removeprefix(f"{params.PARAMS_FILE}: ")
        raise _fail(source, where, f"{subject} outside what params.yaml accepts ({reason})") from None


def _study(raw: Any, raw_params: dict, source: str) -> dict:
    if not isinstance(raw, dict):
        raise _fail(source, "study", "missing or not a mapping; expected " + ", ".join(STUDY_KEYS))
    unknown = sorted(set(map(str, raw)) - set(STUDY_KEYS))
    if unknown:
        raise _fail(source, "study", f"unknown key {params.quote(unknown[0])}; allowed keys: {', '.join(STUDY_KEYS)}")
    missing = [key for key in STUDY_KEYS if key not in raw and key not in OPTIONAL_STUDY_KEYS]
    if missing:
        raise _fail(source, f"study.{missing[0]}", f"missing; expected {STUDY_KEYS[missing[0]]}")

    def integer(key: str, low: int, high: int) -> int:
        value = raw[key]
        if not _is_int(value) or not low <= value <= high:
            raise _fail(source, f"study.{key}", f"{params.quote(value)} is invalid; expected {STUDY_KEYS[key]}")
        return value

    name = raw["name"]
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name) \
            or not name[0].isalnum() or len(name) > 40:
        raise _fail(source, "study.name", f"{params.quote(name)} is invalid; expected {STUDY_KEYS['name']}, "
                    "at most 40 characters, starting with a letter or digit")
    seeds = raw["seeds"]
    seed_rule = params.SCHEMA["train"]["seed"]
    try:
        ok = isinstance(seeds, list) and seeds and all(seed_rule.check(s) == s for s in seeds)
    except (ValueError, TypeError):
        ok = False
    if not ok or len(set(seeds)) != len(seeds):
        raise _fail(source, "study.seeds", f"{params.quote(seeds)} is invalid; expected {STUDY_KEYS['seeds']} "
                    f"({seed_rule.expected} each)")
    fixed = raw["fixed"] if raw["fixed"] is not None else {}
    if not isinstance(fixed, dict):
        raise _fail(source, "study.fixed", f"{params.quote(fixed)} is invalid; expected {STUDY_KEYS['fixed']}")
    for key in fixed:
        params_key(raw_params, key, source, f"study.fixed.{key}")
        if key == SEED_KEY:
            raise _fail(source, f"study.fixed.{key}", "the seeds are study.seeds; remove it here")
    check_accepted(raw_params, fixed, source, "study.fixed", "these values are")
    targets = raw.get("targets", OPTIONAL_STUDY_KEYS["targets"])
    if not isinstance(targets, list) or not all(t in STAGES for t in targets):
        raise _fail(source, "study.targets", f"{params.quote(targets)} is invalid; expected a list of stages "
                    f"({', '.join(STAGES)}); [] = the whole pipeline")
    return {
        "targets": tuple(targets),
        "name": name,
        "trials": integer("trials", 1, 10_000),
        "seeds": tuple(seeds),
        "startup_trials": integer("startup_trials", 0, 10_000),
        "sampler_seed": integer("sampler_seed", 0, 2**32 - 1),
        "jobs": integer("jobs", 1, 64),
        "fixed": dict(fixed),
    }


def _dimension(key: str, spec: Any, raw_params: dict, fixed: dict, source: str) -> Dimension:
    where = f"space.{key}"
    params_key(raw_params, key, source, where)
    if key == SEED_KEY:
        raise _fail(source, where, "the seeds are study.seeds, not a searched key")
    if key in fixed:
        raise _fail(source, where, "is also in study.fixed; a key is either searched or fixed")
    if not isinstance(spec, dict):
        raise _fail(source, where, f"expected a mapping with kind ({', '.join(KINDS)}) and low/high or choices")
    unknown = sorted(set(map(str, spec)) - SPEC_KEYS)
    if unknown:
        raise _fail(source, where, f"unknown key {params.quote(unknown[0])}; allowed keys: kind, low, high, choices")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise _fail(source, f"{where}.kind", f"{params.quote(kind)} is invalid; expected one of {', '.join(KINDS)}")
    if kind == "categorical":
        if set(spec) - {"kind", "choices"}:
            raise _fail(source, where, "a categorical key has choices, not low/high")
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise _fail(source, f"{where}.choices", f"{params.quote(choices)} is invalid; expected a non-empty list")
        encoded = [encode_choice(c) for c in choices]
        if not all(c is None or isinstance(c, (str, int, float, bool)) for c in encoded) \
                or len({json.dumps(c) for c in encoded}) != len(encoded):
            raise _fail(source, f"{where}.choices", f"{params.quote(choices)} is invalid; expected distinct "
                        "numbers, strings or lists of numbers")
        for choice in choices:
            check_accepted(raw_params, {**fixed, key: choice}, source, f"{where}.choices", f"choice {params.quote(choice)} is")
        return Dimension(key, kind, choices=tuple(choices))
    if set(spec) - {"kind", "low", "high"} or "low" not in spec or "high" not in spec:
        raise _fail(source, where, f"a {kind} key has low and high, not choices")
    low, high = spec["low"], spec["high"]
    check = _is_int if kind == "int" else _is_number
    what = "an integer" if kind == "int" else "a finite number"
    for bound, value in (("low", low), ("high", high)):
        if not check(value):
            raise _fail(source, f"{where}.{bound}", f"{params.quote(value)} is invalid; expected {what}")
    if low > high:
        raise _fail(source, where, f"low = {low} is greater than high = {high}")
    if kind == "log-float" and low <= 0:
        raise _fail(source, f"{where}.low", f"{low} is invalid for a log-float range; expected a number > 0")
    ends = (low, high) if kind == "int" else (float(low), float(high))
    for bound, value in zip(("low", "high"), ends):
        check_accepted(raw_params, {**fixed, key: value}, source, f"{where}.{bound}", f"{bound} = {value} is")
    return Dimension(key, kind, low=ends[0], high=ends[1])


def validate(raw: Any, raw_params: dict, text: str = "", source: str = SEARCH_FILE) -> SearchSpace:
    """Check a parsed search.yaml against ``raw_params`` (a parsed, valid params.yaml)."""
    if not isinstance(raw, dict):
        raise _fail(source, "", f"expected a mapping with 'study' and 'space', got {type(raw).__name__}")
    unknown = sorted(set(map(str, raw)) - {"study", "space"})
    if unknown:
        raise _fail(source, "", f"unknown section {params.quote(unknown[0])}; allowed sections: study, space")
    study = _study(raw.get("study"), raw_params, source)
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        raise _fail(source, "space", "missing or empty; expected params.yaml keys, each with kind and a range")
    dimensions = tuple(_dimension(key, spec, raw_params, study["fixed"], source) for key, spec in space.items())
    return SearchSpace(dimensions=dimensions, text=text, **study)


def load(path: str | Path = SEARCH_FILE, params_path: str | Path = params.PARAMS_FILE) -> SearchSpace:
    """Read and validate search.yaml against the (valid) params.yaml beside it."""
    params.load(params_path)  # a valid params.yaml first: the space is checked against it
    raw_params = params.parse(Path(params_path).read_text(encoding="utf-8"), str(params_path))
    path = files.require_regular_file(path, MAX_SEARCH_BYTES, "write one (see README, Search)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: cannot read ({err.__class__.__name__}: {err})") from None
    return validate(params.parse(text, str(path)), raw_params, text, str(path))
