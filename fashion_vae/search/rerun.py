"""Re-run finished trials over more seeds and other settings: ``python -m fashion_vae.search rerun``.

A study's trials run on a capped budget and few seeds; the points worth keeping are then
re-run at full length over at least 3 seeds before any is called better. Each re-run is a
trial's params with ``--set`` overrides (``train.epochs=40``), one DVC experiment per seed,
named ``STUDY-tNNN-TAG-sSEED`` and run by DVC's queue like the study's own. When all have
finished, their metrics and the medians over seeds are kept in the study's storage (a study
attribute ``rerun:NNN-TAG``), so ``report`` lists them beside the trials on every machine
that shares the database. Running the same command again reads what exists and queues only
what is missing; a re-run already recorded is not run again.
"""
from __future__ import annotations

import datetime as dt
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from fashion_vae import params
from fashion_vae.errors import PipelineError
from fashion_vae.search import experiments as exps
from fashion_vae.search.driver import (
    Driver,
    InFlight,
    driving,
    machine_description,
    storage_errors,
)
from fashion_vae.search.scores import medians, seed_objectives, spreads
from fashion_vae.search.space import OBJECTIVES, SEED_KEY, SearchSpace, check_accepted, params_key
from fashion_vae.search.storage import load_study, safe_url

RERUN_PREFIX = "rerun:"  # study attributes: rerun:NNN-TAG -> the re-run's record
TAG = re.compile(r"^[a-z0-9][a-z0-9_]{0,15}$")
SEEDS = 3  # a comparison is a claim only over at least 3 seeds
STATE_TEXT = {"FAIL": "failed", "RUNNING": "is still running", "WAITING": "is waiting to run", "PRUNED": "was pruned"}


def raw_params(path: str | Path = params.PARAMS_FILE) -> dict:
    return params.parse(Path(path).read_text(encoding="utf-8"), str(path))


def parse_overrides(items: list[str], raw: dict) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (the value read as YAML, as ``dvc exp run -S`` reads it) for params.yaml keys."""
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise PipelineError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=40")
        key = params_key(raw, key.strip(), "--set", "")
        if key == SEED_KEY:
            raise PipelineError(f"--set {key}: the seeds are --seeds, not an override")
        try:
            overrides[key] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise PipelineError(f"--set {item!r}: the value is not valid YAML") from None
    return overrides


def rerun_seeds(study_seeds, given: list[int] | None) -> list[int]:
    """``given``, or the study's seeds followed by the next ones, ``SEEDS`` in all."""
    if given:
        if len(set(given)) != len(given):
            raise PipelineError(f"--seeds {' '.join(map(str, given))}: a seed is given twice")
        for seed in given:
            try:
                params.SEED.check(seed)
            except ValueError:
                raise PipelineError(f"--seeds: {seed} is invalid; expected {params.SEED.expected}") from None
        return list(given)
    seeds = list(study_seeds)
    while len(seeds) < SEEDS:
        seeds.append(max(seeds) + 1)
    return seeds


class Rerunner(Driver):
    """The driver's queue handling (adopting, orphans, workers); what finishes is recorded, not told."""

    def __init__(self, space: SearchSpace, storage_url: str, root: Path, queue: exps.Queue, numbers: list[int],
                 overrides: dict[str, Any], seeds: list[int], tag: str, push: str | None, poll_s: float,
                 raw: dict, log=print):
        super().__init__(space, storage_url, root, queue, jobs=space.jobs, push=push, poll_s=poll_s, log=log)
        self.numbers, self.overrides, self.seeds, self.tag = numbers, overrides, seeds, tag
        self.raw = raw  # the parsed params.yaml the overridden values are checked against

    def flights(self, study) -> list[InFlight]:
        """The re-runs to do: each named trial's params with the overrides, if not recorded yet."""
        from optuna.trial import TrialState

        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        wanted = []
        for number in self.numbers:
            trial = trials.get(number)
            if trial is None or trial.state != TrialState.COMPLETE:
                state = "does not exist" if trial is None else STATE_TEXT.get(trial.state.name, trial.state.name.lower())
                raise PipelineError(f"trial {number} {state}; only completed trials can be re-run")
            values = {**self.space.params_of(trial.params), **self.overrides}
            check_accepted(self.raw, values, "--set", "", f"trial {number}'s params with these values are")
            if record_key(number, self.tag) in study.user_attrs:
                self.log(f"search: re-run of trial {number} ({self.tag}) is already recorded; give --tag another "
                         "name to run it again")
                continue
            names = {seed: f"{self.space.name}-t{number:03d}-{self.tag}-s{seed}" for seed in self.seeds}
            wanted.append(InFlight(trial, names, values))
        return wanted

    def run(self, storage) -> int:
        study = load_study(storage, self.space.name, self.storage_url)
        try:
            wanted = self.flights(study)
            if not wanted:
                return 0
            states = self.queue.status()
            theirs = [n for f in wanted for n in f.names.values()]
            done = self.queue.experiments(expect=[n for n in theirs if states.get(n) == exps.SUCCESS])
            for flight in wanted:
                self.queue_missing(flight, states, done)
                self.in_flight.append(flight)
                changed = ", ".join(f"{k}={v}" for k, v in self.overrides.items()) or "its own params"
                self.log(f"search: re-run of trial {flight.trial.number} ({self.tag}): {changed} -> "
                         f"{', '.join(flight.names.values())} ({len(flight.results)} already finished)")
            while self.in_flight:
                self.step(study)
                if self.in_flight:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clean-up runs to its end
            removed = self.stop_unfinished()
            print(f"error: interrupted (Ctrl-C); removed {removed} unfinished experiment(s) and kept every finished "
                  "one; run the same command to continue", file=sys.stderr)
            return 130
        except storage_errors() as err:
            from fashion_vae.search.storage import one_line

            raise PipelineError(f"lost the study's database {safe_url(self.storage_url)} ({one_line(err)}); "
                                "finished experiments are kept, and running this command again resumes") from None
        return 0

    def tell(self, study, flight: InFlight) -> None:
        """Record the re-run in the study: nothing is told to the sampler, it is not a new trial."""
        number = flight.trial.number
        per_seed = seed_objectives(flight)
        record = {
            "trial": number, "tag": self.tag, "set": self.overrides, "params": flight.values,
            "experiments": {str(seed): name for seed, name in flight.names.items()}, "per_seed": per_seed,
            "workspace": self.me, "machine": machine_description(),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if flight.error:
            record["error"] = flight.error
            self.log(f"search: re-run of trial {number} ({self.tag}) failed: {flight.error}")
        else:
            summary = ", ".join(f"{name} {value:.4g}" for (name, _, _), value in zip(OBJECTIVES, medians(per_seed)))
            self.log(f"search: re-run of trial {number} ({self.tag}) done: {summary} (median of {len(per_seed)} seeds)")
            if self.push:
                self.queue.push(self.push, list(flight.names.values()))
        study.set_user_attr(record_key(number, self.tag), record)


def record_key(number: int, tag: str) -> str:
    return f"{RERUN_PREFIX}{number:03d}-{tag}"


def rerun(space: SearchSpace, storage_url: str, root: Path, numbers: list[int], settings: list[str],
          seeds: list[int] | None, tag: str, push: str | None, poll_s: float) -> int:
    """``python -m fashion_vae.search rerun``: checked before anything is queued, then one driver per workspace."""
    if not TAG.match(tag):
        raise PipelineError(f"--tag {tag!r} is invalid; expected up to 16 lowercase letters, digits or _")
    raw = raw_params()
    overrides = parse_overrides(settings, raw)
    chosen = rerun_seeds(space.seeds, seeds)
    queue = exps.Queue(root)
    with driving(root, storage_url, queue) as storage:
        return Rerunner(space, storage_url, root, queue, numbers, overrides, chosen, tag, push, poll_s, raw).run(storage)


def records(study) -> list[dict]:
    """The study's recorded re-runs, by trial and tag, each with the median and range over its seeds."""
    out = []
    for key in sorted(k for k in study.user_attrs if k.startswith(RERUN_PREFIX)):
        record = dict(study.user_attrs[key])
        if "error" not in record:
            record.update(spreads(record.get("per_seed", {})))
        out.append(record)
    return out
