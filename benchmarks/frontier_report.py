"""The frontier's report: when each configuration reaches the plain example's quality,
the printed table, the figure, and appending to an earlier report."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.frontier_runs import KNN_K, PLAIN


def seconds_to_reach(results: list[dict], config: str, target: float) -> float | None:
    """Training seconds at which ``config`` first reaches test iwae_nll ``target``, linear between points.

    None if it never does; the first point's seconds if it already does there (an upper bound).
    """
    points = sorted((r["train_seconds"], r["iwae_nll"]) for r in results if r["config"] == config)
    previous = None
    for seconds, nll in points:
        if nll <= target:
            if previous is None:
                return seconds
            (s0, n0) = previous
            return s0 + (seconds - s0) * (n0 - target) / (n0 - nll)
        previous = (seconds, nll)
    return None


def speedups(results: list[dict]) -> dict:
    """For each configuration: when it reaches the plain example's final quality, and how much sooner."""
    final = [r for r in results if r["config"] == PLAIN and r["budget_s"] is None]
    if not final:
        return {}
    target, plain_seconds = final[0]["iwae_nll"], final[0]["train_seconds"]
    plain = {"iwae_nll": target, "train_seconds": plain_seconds, "epochs": final[0]["epochs_run"]}
    out = {"plain_final": plain}
    for name in dict.fromkeys(r["config"] for r in results if r["config"] != PLAIN):
        reached = seconds_to_reach(results, name, target)
        first = min(r["train_seconds"] for r in results if r["config"] == name)
        out[name] = {
            "seconds": None if reached is None else round(reached, 1),
            "times_faster": None if reached is None else round(plain_seconds / reached, 1),
            # Already there at its first budget: only "at least" that much faster.
            "at_first_budget": reached is not None and reached == first,
        }
    return out


def print_table(results: list[dict]) -> None:
    print(
        f"\n{'configuration':18s} {'budget s':>8s} {'train s':>8s} {'epochs':>7s} {'iwae_nll':>9s} "
        f"{'-ELBO':>8s} {'KL':>6s} {'5-NN':>6s}"
    )
    for r in sorted(results, key=lambda r: (r["config"], r["budget_s"] or float("inf"))):
        budget = "end" if r["budget_s"] is None else f"{r['budget_s']:.0f}"
        print(
            f"{r['config']:18s} {budget:>8s} {r['train_seconds']:8.1f} {r['epochs_run']:7} "
            f"{r['iwae_nll']:9.2f} {r['neg_elbo']:8.2f} {r['kl']:6.2f} {r[f'knn{KNN_K}']:6.3f}"
        )


def print_speedups(speed: dict) -> None:
    if not speed:
        return
    plain = speed["plain_final"]
    print(f"\nthe plain example's {plain['epochs']:g}-epoch test iwae_nll {plain['iwae_nll']:.2f}, "
          f"after {plain['train_seconds']:.0f} s of training, is reached by:")
    for name, s in speed.items():
        if name == "plain_final":
            continue
        if s["seconds"] is None:
            print(f"  {name:18s} not within its budgets")
        else:
            bound = "at least " if s["at_first_budget"] else ""
            print(f"  {name:18s} after {s['seconds']:.0f} s: {bound}{s['times_faster']:g}x faster")


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
    """Test iwae_nll against training seconds, one line per configuration.

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
        points = sorted((r["train_seconds"], r["iwae_nll"]) for r in results if r["config"] == name)
        label = f"{name} (params.yaml)" if name == default else name
        whole.plot(*zip(*points), marker="o", color=colours[name], label=label)
        late = [pt for pt in points if pt[0] >= 50]
        if name != PLAIN and late:
            zoom.plot(*zip(*late), marker="o", color=colours[name], label=label)
    final = [r for r in results if r["config"] == PLAIN and r["budget_s"] is None]
    if final:
        whole.axhline(final[0]["iwae_nll"], color="grey", linestyle=":", linewidth=1)
        whole.annotate(f"plain example after {final[0]['epochs_run']:g} epochs", (0, final[0]["iwae_nll"]),
                       xycoords=("axes fraction", "data"), xytext=(4, 3), textcoords="offset points",
                       fontsize=8, color="grey")
    whole.set_xscale("log")
    whole.set_title("All configurations (log time axis)")
    zoom.set_title("The project's configurations, 1 to 8 minutes")
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


SCORING_SETTINGS = ("data", "train_images", "test_images", "val_images", "iwae_samples", "seed")


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
