"""A trial's scores: the objectives of each seed's experiment, and their medians and ranges over seeds."""
from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from fashion_vae.search import experiments as exps
from fashion_vae.search.space import OBJECTIVES

if TYPE_CHECKING:
    from fashion_vae.search.driver import InFlight


def objectives(metrics: dict) -> dict[str, float]:
    """Each objective's value in one experiment's metrics (KeyError naming the one it lacks)."""
    values = {}
    for name, path, _ in OBJECTIVES:
        value = metrics
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, (int, float)):
            raise KeyError(f"{exps.METRICS_FILE} has no {'.'.join(path)}")
        values[name] = float(value)
    return values


def seed_objectives(flight: InFlight) -> dict[str, dict]:
    """Seed -> the objectives and rev of each finished experiment; a missing metric fails the flight."""
    per_seed = {}
    try:
        for seed, result in flight.results.items():
            per_seed[str(seed)] = {**objectives(result["metrics"]), "rev": result["rev"]}
    except KeyError as err:
        flight.error = flight.error or f"{flight.names[seed]}: {err.args[0]}"
    return per_seed


def medians(per_seed: dict[str, dict]) -> list[float]:
    """Each objective's median over the seeds, in OBJECTIVES' order."""
    return [statistics.median(r[name] for r in per_seed.values()) for name, _, _ in OBJECTIVES]


def spreads(per_seed: dict[str, dict]) -> dict[str, dict]:
    """Each objective's median, min and max over the seeds that have it (none: left out)."""
    out = {}
    for name, _, _ in OBJECTIVES:
        values = [seed[name] for seed in per_seed.values() if name in seed]
        if values:
            out[name] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return out
