"""The frontier's report: when each configuration reaches the plain example's quality,
the printed table, the figure, and appending to an earlier report."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from benchmarks.frontier_runs import KNN_K, PLAIN


def seed_of(result: dict) -> int | None:
    """The training seed of a run (reports made before ``--seeds`` have one seed, not recorded per run)."""
    return result.get("seed")


def by_budget(results: list[dict], config: str) -> dict:
    """``config``'s runs grouped by budget (None: the plain example's end), in budget order."""
    groups: dict = {}
    for r in results:
        if r["config"] == config:
            groups.setdefault(r["budget_s"], []).append(r)
    return dict(sorted(groups.items(), key=lambda item: float("inf") if item[0] is None else item[0]))


def spread(values: list[float]) -> dict:
    """Median and range of one score over seeds."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summary(results: list[dict], config: str, key: str) -> list[tuple[float | None, dict, dict]]:
    """(budget, training seconds over seeds, ``key`` over seeds) for each budget of ``config``."""
    return [(budget, spread([r["train_seconds"] for r in runs]), spread([r[key] for r in runs]))
            for budget, runs in by_budget(results, config).items()]


def seconds_to_reach(points: list[tuple[float, float]], target: float) -> float | None:
    """Training seconds at which a curve of (seconds, iwae_nll) first reaches ``target``, linear between points.

    None if it never does; the first point's seconds if it already does there (an upper bound).
    """
    previous = None
    for seconds, nll in sorted(points):
        if nll <= target:
            if previous is None:
                return seconds
            (s0, n0) = previous
            return s0 + (seconds - s0) * (n0 - target) / (n0 - nll)
        previous = (seconds, nll)
    return None


def median_curve(results: list[dict], config: str) -> list[tuple[float, float]]:
    """``config``'s median training seconds and median test iwae_nll at each budget."""
    return [(sec["median"], nll["median"]) for _, sec, nll in summary(results, config, "iwae_nll")]


def seed_curve(results: list[dict], config: str, seed) -> list[tuple[float, float]]:
    return [(r["train_seconds"], r["iwae_nll"]) for r in results if r["config"] == config and seed_of(r) == seed]


def speedups(results: list[dict]) -> dict:
    """For each configuration: when it reaches the plain example's final quality, and how much sooner.

    Over seeds: the target is the median of the plain example's final test iwae_nll and its
    time the median of its training seconds; the configuration's median curve (median seconds
    and median iwae_nll at each budget) is interpolated to reach it. Beside that, each seed of
    the configuration against the plain example's run with the same seed gives a ratio: their
    median and range say how much the claim depends on the seed.
    """
    finals = [r for r in results if r["config"] == PLAIN and r["budget_s"] is None]
    if not finals:
        return {}
    target = statistics.median(r["iwae_nll"] for r in finals)
    plain_seconds = statistics.median(r["train_seconds"] for r in finals)
    out = {"plain_final": {
        "iwae_nll": spread([r["iwae_nll"] for r in finals]),
        "train_seconds": spread([r["train_seconds"] for r in finals]),
        "epochs": finals[0]["epochs_run"],
        "seeds": sorted(seed_of(r) for r in finals if seed_of(r) is not None),
    }}
    for name in dict.fromkeys(r["config"] for r in results if r["config"] != PLAIN):
        curve = median_curve(results, name)
        reached = seconds_to_reach(curve, target)
        per_seed = []
        for final in finals:
            mine = seed_curve(results, name, seed_of(final))
            hit = seconds_to_reach(mine, final["iwae_nll"]) if mine else None
            if mine:
                per_seed.append(None if hit is None else final["train_seconds"] / hit)
        reached_ratios = [r for r in per_seed if r is not None]
        out[name] = {
            "seconds": None if reached is None else round(reached, 1),
            "times_faster": None if reached is None else round(plain_seconds / reached, 1),
            # Already there at its first budget: only "at least" that much faster.
            "at_first_budget": reached is not None and reached == curve[0][0],
            "times_faster_per_seed": (
                {key: round(value, 1) for key, value in spread(reached_ratios).items() if key != "n"}
                | {"n": len(reached_ratios), "not_reached": len(per_seed) - len(reached_ratios)}
                if reached_ratios else None
            ),
        }
    return out


def fmt(stat: dict, digits: int = 2) -> str:
    """``median [min, max]`` of a score over seeds (just the value for one seed)."""
    if stat["n"] == 1:
        return f"{stat['median']:.{digits}f}"
    return f"{stat['median']:.{digits}f} [{stat['min']:.{digits}f}, {stat['max']:.{digits}f}]"


def print_table(results: list[dict]) -> None:
    print(f"\n{'configuration':18s} {'budget s':>8s} {'seeds':>5s} {'train s':>8s} "
          f"{'iwae_nll median [min, max]':>28s} {'5-NN median [min, max]':>26s}")
    for name in sorted(dict.fromkeys(r["config"] for r in results)):
        nll, knn = summary(results, name, "iwae_nll"), summary(results, name, f"knn{KNN_K}")
        for (budget, seconds, n), (_, _, k) in zip(nll, knn):
            label = "end" if budget is None else f"{budget:.0f}"
            print(f"{name:18s} {label:>8s} {n['n']:5d} {seconds['median']:8.1f} {fmt(n):>28s} {fmt(k, 3):>26s}")


def print_speedups(speed: dict) -> None:
    if not speed:
        return
    plain = speed["plain_final"]
    print(f"\nthe plain example's {plain['epochs']:g}-epoch test iwae_nll, median {fmt(plain['iwae_nll'])} over "
          f"{plain['iwae_nll']['n']} seeds after a median {plain['train_seconds']['median']:.0f} s of training, "
          "is reached by (median curve; beside it, each seed against the plain example's same seed):")
    for name, s in speed.items():
        if name == "plain_final":
            continue
        if s["seconds"] is None:
            line = "not within its budgets"
        else:
            bound = "at least " if s["at_first_budget"] else ""
            line = f"after {s['seconds']:.0f} s: {bound}{s['times_faster']:g}x sooner"
        per_seed = s.get("times_faster_per_seed")
        if per_seed:
            line += f"; per seed {fmt(per_seed, 1)}x" + (
                f", {per_seed['not_reached']} seed(s) not within budgets" if per_seed["not_reached"] else "")
        print(f"  {name:18s} {line}")


def default_config(configs: dict, cfg: dict) -> str | None:
    """The configuration that params.yaml's current values give, if one of them does."""
    for name, spec in configs.items():
        if spec is not None and all(
            cfg[section].get(key) == value
            for section, values in spec.items()
            for key, value in values.items()
        ):
            return name
    return None


def figure(results: list[dict], default: str | None = None):
    """Test iwae_nll against training seconds: each configuration's median over seeds, its range shaded.

    Left: everything, the plain example included, on a log time axis. Right: the project's
    configurations from one minute on, where their differences (a nat or two) are visible.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (whole, zoom) = plt.subplots(1, 2, figsize=(12, 4.8))
    names = list(dict.fromkeys(r["config"] for r in results))
    colours = {name: f"C{i}" for i, name in enumerate(names)}
    for name in names:
        rows = summary(results, name, "iwae_nll")
        seeds = max(n["n"] for _, _, n in rows)
        label = f"{name} (params.yaml)" if name == default else name
        label += f", {seeds} seeds" if seeds > 1 else ""
        for ax, keep in ((whole, rows), (zoom, [row for row in rows if row[1]["median"] >= 50])):
            if ax is zoom and (name == PLAIN or not keep):
                continue
            x = [sec["median"] for _, sec, _ in keep]
            ax.plot(x, [n["median"] for _, _, n in keep], marker="o", color=colours[name], label=label)
            if seeds > 1:
                low, mid, high = ([n[k] for _, _, n in keep] for k in ("min", "median", "max"))
                ax.fill_between(x, low, high, color=colours[name], alpha=0.2, linewidth=0)
                # and as bars: a lone point (one budget past a minute) still shows its range
                ax.errorbar(x, mid, yerr=[[m - lo for m, lo in zip(mid, low)], [hi - m for m, hi in zip(mid, high)]],
                            fmt="none", ecolor=colours[name], capsize=3, linewidth=1)
    final = [r for r in results if r["config"] == PLAIN and r["budget_s"] is None]
    if final:
        target = statistics.median(r["iwae_nll"] for r in final)
        whole.axhline(target, color="grey", linestyle=":", linewidth=1)
        whole.annotate(f"plain example after {final[0]['epochs_run']:g} epochs (median)", (0, target),
                       xycoords=("axes fraction", "data"), xytext=(4, 3), textcoords="offset points",
                       fontsize=8, color="grey")
    whole.set_xscale("log")
    whole.set_title("All configurations (log time axis; median, range over seeds)")
    zoom.set_title("The project's configurations, from 1 minute")
    for ax in (whole, zoom):
        ax.set_xlabel("training seconds (wall clock)")
        ax.set_ylabel("test iwae_nll (nats per image, lower is better)")
        ax.grid(alpha=0.3)
    whole.legend(fontsize=8)
    if zoom.get_lines():  # short smoke runs have nothing past a minute
        zoom.legend(fontsize=8)
    fig.tight_layout()
    return fig


def draw(results: list[dict], path: Path, default: str | None = None) -> None:
    import matplotlib.pyplot as plt

    fig = figure(results, default)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


# The training seed is per run (--seeds), so it is not among them: more seeds can be appended.
SCORING_SETTINGS = ("data", "train_images", "test_images", "val_images", "iwae_samples")


def previous_report(path: Path, settings: dict) -> dict:
    """The report that ``--append`` adds to; its runs must have been scored the same way."""
    try:
        earlier = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"error: {path}: cannot append to it ({err})") from None
    differ = [k for k in SCORING_SETTINGS if earlier.get("settings", {}).get(k) != settings[k]]
    if differ:
        raise SystemExit(
            f"error: {path}: made with other settings ({', '.join(differ)}); append needs the same"
        )
    return earlier


def markdown_table(results: list[dict]) -> str:
    """The frontier as Markdown: each configuration's budgets, median [min, max] over seeds."""
    lines = ["| configuration | budget | seeds | train s | test iwae_nll | -ELBO | 5-NN |", "|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["config"] for r in results):
        rows = zip(summary(results, name, "iwae_nll"), summary(results, name, "neg_elbo"),
                   summary(results, name, f"knn{KNN_K}"))
        ends = by_budget(results, name).get(None, [])
        for (budget, seconds, nll), (_, _, elbo), (_, _, knn) in rows:
            label = f"end ({ends[0]['epochs_run']:g} epochs)" if budget is None else f"{budget:g} s"
            lines.append(f"| {name} | {label} | {nll['n']} | {seconds['median']:.0f} | {fmt(nll)} | {fmt(elbo)} | "
                         f"{fmt(knn, 3)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.frontier_report REPORT.json [--plot PNG]``: the table (Markdown), the
    speed-ups and, with ``--plot``, the figure, from a saved report (a frontier cut off midway too)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("report", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    report = json.loads(args.report.read_text())
    results = report["results"]
    print(markdown_table(results))
    print_speedups(speedups(results))
    if args.plot:
        from fashion_vae import params

        draw(results, args.plot, default_config(report["settings"].get("configs", {}), params.load()))


if __name__ == "__main__":
    main()
