"""The study's report: every trial as a record, the Pareto front as a figure and a table.

Read from Optuna's storage alone (no DVC needed), so any machine sharing the database can
write it: ``study.json`` (every trial's params, seeds, per-seed metrics, experiment names,
state and error), ``front.png`` (every completed trial at its median over seeds, the range
over seeds as error bars, the front highlighted, params.yaml's current values marked) and
``front.md`` (the front as a table naming each trial's experiments, for ``dvc exp apply``),
``trials.md`` (every trial, a row per seed, failures with their error line), ``reruns.md``
(the trials run again with ``rerun``: their overrides, seeds, medians and ranges) and, once a
re-run has finished, ``reruns.png`` (the re-runs against the quality targets).
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from fashion_vae import atomic, params
from fashion_vae.search import rerun
from fashion_vae.search.driver import (
    DEFINITION,
    ERROR,
    EXPERIMENTS,
    INTERRUPTED,
    PER_SEED,
    WORKSPACE,
)
from fashion_vae.search.scores import spreads
from fashion_vae.search.space import OBJECTIVES, SearchSpace, decode_choice, lookup
from fashion_vae.search.storage import load_study, safe_url

DEFAULT_OUT = Path("search/report")
# Issue 18's quality targets for the default (3-seed median, full data), drawn in reruns.png.
TARGETS = {"iwae_nll": 250.0, "knn5": 0.72}


def trial_record(trial, space: SearchSpace) -> dict:
    """One trial as plain JSON: what it tried, with which seeds, what each seed gave."""
    per_seed = trial.user_attrs.get(PER_SEED, {})
    record = {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "params": space.params_of(trial.params),
        "experiments": trial.user_attrs.get(EXPERIMENTS, {}),
        "per_seed": per_seed,
        "workspace": trial.user_attrs.get(WORKSPACE),
        "machine": trial.user_attrs.get("machine"),
        "started": trial.datetime_start.isoformat(timespec="seconds") if trial.datetime_start else None,
        "finished": trial.datetime_complete.isoformat(timespec="seconds") if trial.datetime_complete else None,
        "default": bool(trial.user_attrs.get("default")),
    }
    record.update(spreads(per_seed))
    if trial.user_attrs.get(ERROR):
        record["error"] = trial.user_attrs[ERROR]
    if trial.user_attrs.get(INTERRUPTED):
        record["interrupted"] = True
    return record


def pareto_front(records: list[dict]) -> list[dict]:
    """Completed trials no other completed trial beats on both medians (lower iwae_nll, higher 5-NN)."""
    done = [r for r in records if r["state"] == "complete"]

    def beats(a: dict, b: dict) -> bool:
        (n1, _, d1), (n2, _, d2) = OBJECTIVES
        sign1, sign2 = (1 if d1 == "minimize" else -1), (1 if d2 == "minimize" else -1)
        a1, b1 = sign1 * a[n1]["median"], sign1 * b[n1]["median"]
        a2, b2 = sign2 * a[n2]["median"], sign2 * b[n2]["median"]
        return a1 <= b1 and a2 <= b2 and (a1 < b1 or a2 < b2)

    front = [r for r in done if not any(beats(other, r) for other in done)]
    return sorted(front, key=lambda r: r[OBJECTIVES[0][0]]["median"])


def current_defaults(records: list[dict], space: SearchSpace, cfg: dict) -> list[int]:
    """Trials that ran params.yaml's current values of the searched keys."""
    wanted = {d.key: lookup(cfg, d.key) for d in space.dimensions}
    return [r["number"] for r in records if all(r["params"].get(k) == v for k, v in wanted.items())]


def spread_text(stat: dict, digits: int) -> str:
    if stat["min"] == stat["max"]:
        return f"{stat['median']:.{digits}f}"
    return f"{stat['median']:.{digits}f} [{stat['min']:.{digits}f}, {stat['max']:.{digits}f}]"


def front_table(front: list[dict], space: SearchSpace, defaults: list[int]) -> str:
    keys = [d.key for d in space.dimensions]
    header = ["trial", "iwae_nll median [min, max]", "5-NN median [min, max]", *keys, "experiments (dvc exp apply NAME)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in front:
        mark = " (params.yaml)" if r["number"] in defaults else ""
        cells = [f"{r['number']}{mark}", spread_text(r["iwae_nll"], 2), spread_text(r["knn5"], 4),
                 *(_cell(r["params"][k]) for k in keys), ", ".join(f"`{n}`" for n in r["experiments"].values())]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = len(space.seeds)
    return ("\n".join(lines) + f"\n\nMedian and range over {seeds} seeds (train.seed {', '.join(map(str, space.seeds))}); "
            f"fixed for every trial: {', '.join(f'{k}={_cell(v)}' for k, v in space.fixed.items()) or 'nothing'}.\n")


def trials_table(records: list[dict], space: SearchSpace, front: list[dict]) -> str:
    """Every trial, one row per seed: what it tried, what each seed gave, or why it failed."""
    keys = [d.key for d in space.dimensions]
    on_front = {r["number"] for r in front}
    header = ["trial", "state", *keys, "seed", "experiment", "iwae_nll", "5-NN (or the error)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        state = r["state"] + (", front" if r["number"] in on_front else "") + (", params.yaml" if r["default"] else "")
        first = [str(r["number"]), state, *(_cell(r["params"][k]) for k in keys)]
        seeds = r["experiments"] or {"": ""}
        for i, (seed, name) in enumerate(seeds.items()):
            got = r["per_seed"].get(seed, {})
            cells = (first if i == 0 else [""] * len(first)) + [
                seed, f"`{name}`" if name else "", f"{got['iwae_nll']:.2f}" if "iwae_nll" in got else "",
                f"{got['knn5']:.4f}" if "knn5" in got else (r.get("error", "") if i == 0 else "")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def reruns_table(reruns: list[dict]) -> str:
    """The re-runs: which trial, what was changed, and the median and range over their seeds."""
    header = ["trial", "tag", "changed", "seeds", "iwae_nll median [min, max]", "5-NN median [min, max]",
              "experiments (dvc exp apply NAME)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in reruns:
        changed = ", ".join(f"{k}={_cell(v)}" for k, v in r["set"].items()) or "nothing"
        scores = ([spread_text(r["iwae_nll"], 2), spread_text(r["knn5"], 4)] if "iwae_nll" in r
                  else [f"failed: {r.get('error', '')}", ""])
        cells = [str(r["trial"]), r["tag"], changed, ", ".join(r["experiments"]), *scores,
                 ", ".join(f"`{n}`" for n in r["experiments"].values())]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(decode_choice(value))


def figure(records: list[dict], front: list[dict], defaults: list[int], title: str):
    (nll, _, _), (knn, _, _) = OBJECTIVES
    done = [r for r in records if r["state"] == "complete"]
    fig, ax = _new_axes()
    front_numbers = {r["number"] for r in front}
    _medians_with_ranges(ax, [r for r in done if r["number"] not in front_numbers], marker="o", color="0.6",
                         label="trial")
    _medians_with_ranges(ax, front, marker="o", color="C3", label="Pareto front")
    if front:
        ax.plot([r[knn]["median"] for r in front], [r[nll]["median"] for r in front], color="C3", linewidth=1,
                alpha=0.6)
    marked = [r for r in done if r["number"] in defaults]
    if marked:
        ax.plot([r[knn]["median"] for r in marked], [r[nll]["median"] for r in marked], marker="*", markersize=16,
                linestyle="none", markerfacecolor="none", markeredgecolor="k", label="params.yaml's values")
    for r in done:
        ax.annotate(str(r["number"]), (r[knn]["median"], r[nll]["median"]), xytext=(4, 3),
                    textcoords="offset points", fontsize=7, color="0.3")
    _finish(ax, title)
    return fig


def reruns_figure(reruns: list[dict], defaults: list[int], title: str):
    """The finished re-runs at their median over seeds, ranges as bars, against TARGETS."""
    (nll, _, _), (knn, _, _) = OBJECTIVES
    fig, ax = _new_axes()
    for i, r in enumerate(reruns):
        changed = ", ".join(f"{k}={_cell(v)}" for k, v in r["set"].items()) or "as in the study"
        name = f"trial {r['trial']}" + (" (params.yaml)" if r["trial"] in defaults else "")
        _medians_with_ranges(ax, [r], marker="o", color=f"C{i}",
                             label=f"{name}, {changed}, {len(r['experiments'])} seeds")
    # The targets bound a corner of the plane: what lies beyond both lines meets both.
    ax.axhline(TARGETS[nll], color="k", linestyle="--", linewidth=1)
    ax.axvline(TARGETS[knn], color="k", linestyle="--", linewidth=1)
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    ax.fill_between([TARGETS[knn], x1], y0, TARGETS[nll], color="C2", alpha=0.12,
                    label=f"the targets: iwae_nll <= {TARGETS[nll]:g}, 5-NN >= {TARGETS[knn]:g}")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    _finish(ax, title)
    return fig


def _new_axes():
    import matplotlib

    matplotlib.use("Agg")  # files only, on machines without a display
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7.5, 5.2))


def _medians_with_ranges(ax, rows: list[dict], **style) -> None:
    if not rows:
        return
    (nll, _, _), (knn, _, _) = OBJECTIVES
    x = [r[knn]["median"] for r in rows]
    y = [r[nll]["median"] for r in rows]
    xerr = [[r[knn]["median"] - r[knn]["min"] for r in rows], [r[knn]["max"] - r[knn]["median"] for r in rows]]
    yerr = [[r[nll]["median"] - r[nll]["min"] for r in rows], [r[nll]["max"] - r[nll]["median"] for r in rows]]
    ax.errorbar(x, y, xerr=xerr, yerr=yerr, linestyle="none", capsize=2, **style)


def _finish(ax, title: str) -> None:
    ax.set_xlabel("5-NN accuracy of test z_mean (higher is better)")
    ax.set_ylabel("test iwae_nll, nats per image (lower is better)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.figure.tight_layout()


def _write_png(fig, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    atomic.write_bytes(path, buffer.getvalue())


def write(storage, storage_url: str, space: SearchSpace, out: Path) -> dict:
    """Write study.json, front.png, front.md, trials.md, reruns.md (and reruns.png) under ``out``; return the record."""
    study = load_study(storage, space.name, storage_url)
    records = [trial_record(t, space) for t in study.get_trials(deepcopy=False)]
    front = pareto_front(records)
    defaults = current_defaults(records, space, params.load())
    record = {
        "study": space.name,
        "storage": safe_url(storage_url),
        "written": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "objectives": [{"name": n, "metric": "metrics/eval.json: " + ".".join(p), "direction": d}
                       for n, p, d in OBJECTIVES],
        "search_yaml": study.user_attrs.get("search_yaml", space.text),
        "definition": study.user_attrs.get(DEFINITION),
        "drivers": study.user_attrs.get("drivers", []),
        "counts": {state: sum(r["state"] == state for r in records) for state in ("complete", "fail", "running")},
        "front": [r["number"] for r in front],
        "params_yaml_trials": defaults,
        "trials": records,
        "reruns": rerun.records(study),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "study.json", json.dumps(record, indent=2) + "\n")
    atomic.write_text(out / "front.md", front_table(front, space, defaults))
    atomic.write_text(out / "trials.md", trials_table(records, space, front))
    atomic.write_text(out / "reruns.md", reruns_table(record["reruns"]))
    _write_png(figure(records, front, defaults, f"study {space.name}: {record['counts']['complete']} completed "
                                                f"trials, median and range over {len(space.seeds)} seeds"),
               out / "front.png")
    finished = finished_reruns(record)
    if finished:
        _write_png(reruns_figure(finished, defaults, f"study {space.name}: the re-runs, median and range over seeds"),
                   out / "reruns.png")
    return record


def finished_reruns(record: dict) -> list[dict]:
    return [r for r in record["reruns"] if OBJECTIVES[0][0] in r]
