"""The benchmark's own machinery: FLOP counts, interleaving, statistics, import order, profile coverage."""
import json
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.flops import SEED_MODEL, flops_per_image
from benchmarks.interleave import Runner, bench_training, summarise
from tests.conftest import REPO_ROOT, project_env


def test_seed_flops_match_the_issue_reference():
    flops = flops_per_image(SEED_MODEL)
    assert flops["forward_flop"] / 1e6 == pytest.approx(13.3, abs=0.05)
    assert flops["train_flop"] / 1e6 == pytest.approx(39.9, abs=0.15)


def test_decoder_hidden_layer_flops():
    hidden = 256
    base = flops_per_image(SEED_MODEL)["forward_flop"]
    wider = flops_per_image({**SEED_MODEL, "decoder_dense_units": hidden})["forward_flop"]
    # z (2) -> hidden, and the 7x7x64 projection now reads `hidden` inputs instead of 2.
    assert wider - base == 2 * (2 * hidden + (hidden - 2) * 7 * 7 * 64)


def test_configurations_are_timed_alternately_after_one_untimed_warm_up():
    calls = []

    def epoch_of(name, seconds):
        def run():
            calls.append(name)
            return seconds.pop(0)
        return run

    # The first value of each list is the warm-up epoch's, which must not be counted.
    a = Runner("A", 1000, epoch_of("A", [99.0, 1.0, 2.0, 4.0]), train_flop=1e6, batch_size=10)
    b = Runner("B", 500, epoch_of("B", [99.0, 0.5, 0.5, 1.0]), train_flop=2e6, batch_size=20)
    results = bench_training([a, b], reps=3, peak_gflops=1.0)

    assert calls == ["A", "B", "A", "B", "A", "B", "A", "B"]
    assert results["A"]["epoch_seconds"] == [1.0, 2.0, 4.0]
    assert results["A"]["images_per_second"]["median"] == 500.0
    assert results["B"]["images_per_second"] == {"median": 1000.0, "min": 500.0, "max": 1000.0, "n": 3}
    assert results["B"]["gflops"]["median"] == pytest.approx(1000.0 * 2e6 / 1e9)
    assert results["B"]["fraction_of_matmul_peak"] == pytest.approx(2.0)


def test_summary_gives_quartiles_only_from_four_values():
    assert "iqr" not in summarise([3.0, 1.0, 2.0])
    summary = summarise([4.0, 1.0, 3.0, 2.0, 5.0])
    assert summary["median"] == 3.0 and (summary["min"], summary["max"]) == (1.0, 5.0)
    assert summary["iqr"] == [2.0, 4.0]


def test_importing_the_benchmark_leaves_tensorflow_unloaded():
    # --onednn and the plain child's TensorFlow defaults only work if TensorFlow (and
    # fashion_vae, which sets TensorFlow options) load after the command line is read.
    code = ("import sys, benchmarks.bench; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'fashion_vae') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=project_env(), capture_output=True,
                         text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_the_plain_examples_child_loads_tensorflow_quietly_and_under_its_defaults(tmp_path):
    """The benchmark's child that runs the keras.io example under TensorFlow's defaults (its own
    process, no project settings) imports TensorFlow as the stages do: no start-up lines."""
    data = tmp_path / "data" / "prepared"
    data.mkdir(parents=True)
    np.savez(data / "train.npz", x=np.zeros((64, 28, 28, 1), np.float32), y=np.zeros(64, np.uint8))
    env = {**project_env(handover=False), "PYTHONPATH": str(REPO_ROOT)}
    env.pop("TF_CPP_MIN_LOG_LEVEL")  # as a user runs it
    code = ("import pathlib, sys; from benchmarks import runners; "
            "runners.ROOT = pathlib.Path(sys.argv[1]); runners.plain_worker(64, 1)")  # its data from tmp_path
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO_ROOT, env=env, input="",
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", out.stderr  # TensorFlow printed lines like "oneDNN custom operations are on" here
    info = json.loads(out.stdout.split("READY ", 1)[1].splitlines()[0])
    assert info["op_determinism"] is False and info["intra_op_threads"] == 0  # TensorFlow's defaults, not ours


@pytest.mark.parametrize("decoder_dense_units", [0, 32])
def test_profile_times_every_weighted_layer(decoder_dense_units):
    from benchmarks.profile_step import layer_chain
    from fashion_vae.model import build_vae

    small = {**SEED_MODEL, "conv_filters": [8, 16], "decoder_dense_units": decoder_dense_units}
    vae = build_vae(small, seed=0)
    chain = layer_chain(vae, np.zeros((2, 28, 28, 1), np.float32))
    profiled = {id(w) for _, layer, _ in chain for w in layer.trainable_weights}
    assert profiled == {id(w) for w in vae.trainable_weights}
    assert len({name for name, _, _ in chain}) == len(chain)


def test_sweep_rejects_a_malformed_configuration_before_training():
    from benchmarks.sweep import main

    with pytest.raises(json.JSONDecodeError):
        main(['{"train": {"epochs": 2}}', "{not json"])


def frontier_point(config, budget, seconds, nll, seed=42, knn5=0.7):
    return {"config": config, "budget_s": budget, "train_seconds": seconds, "iwae_nll": nll, "neg_elbo": nll + 2, "epochs_run": 30,
            "seed": seed, "knn5": knn5}


def test_frontier_finds_when_a_configuration_reaches_the_plain_examples_final_quality():
    from benchmarks.frontier_report import PLAIN, seconds_to_reach, speedups

    results = [
        frontier_point(PLAIN, 60, 60.0, 280.0),
        frontier_point(PLAIN, None, 600.0, 266.0),  # the plain example's last epoch
        frontier_point("fast", 60, 61.0, 270.0),
        frontier_point("fast", 180, 181.0, 262.0),  # crosses 266 half-way between 61 s and 181 s
        frontier_point("faster", 60, 62.0, 265.0),  # already better at its first budget
        frontier_point("slow", 60, 60.0, 300.0),
        frontier_point("slow", 180, 180.0, 290.0),
    ]
    assert seconds_to_reach([(61.0, 270.0), (181.0, 262.0)], 266.0) == pytest.approx(121.0)
    assert seconds_to_reach([(60.0, 300.0), (180.0, 290.0)], 266.0) is None
    speed = speedups(results)
    assert speed["plain_final"]["iwae_nll"] == {"median": 266.0, "min": 266.0, "max": 266.0, "n": 1}
    assert speed["plain_final"]["train_seconds"]["median"] == 600.0 and speed["plain_final"]["seeds"] == [42]
    assert speed["fast"]["seconds"] == 121.0
    assert speed["fast"]["times_faster"] == pytest.approx(600 / 121, abs=0.05)
    assert not speed["fast"]["at_first_budget"]
    assert speed["faster"]["at_first_budget"] and speed["faster"]["times_faster"] == pytest.approx(9.7)
    assert speed["slow"]["seconds"] is None and speed["slow"]["times_faster"] is None
    assert speed["slow"]["times_faster_per_seed"] is None


def test_frontier_speedup_uses_medians_over_seeds_and_gives_the_per_seed_range():
    """Three seeds: the target is the plain example's median final quality at its median time, the
    configuration's median curve reaches it; seed by seed (same seed on both sides) gives the range."""
    from benchmarks.frontier_report import PLAIN, median_curve, speedups, summary

    results = [
        frontier_point(PLAIN, None, 600.0, 266.0, seed=1),
        frontier_point(PLAIN, None, 620.0, 290.0, seed=2),
        frontier_point(PLAIN, None, 580.0, 280.0, seed=3),  # median target 280 at a median 600 s
        frontier_point("fast", 10, 10.0, 300.0, seed=1), frontier_point("fast", 20, 20.0, 270.0, seed=1),
        frontier_point("fast", 10, 12.0, 290.0, seed=2), frontier_point("fast", 20, 22.0, 260.0, seed=2),
        frontier_point("fast", 10, 11.0, 295.0, seed=3), frontier_point("fast", 20, 21.0, 275.0, seed=3),
    ]
    assert median_curve(results, "fast") == [(11.0, 295.0), (21.0, 270.0)]
    nll = summary(results, "fast", "iwae_nll")
    assert [(budget, n["median"], n["min"], n["max"], n["n"]) for budget, _, n in nll] == [
        (10, 295.0, 290.0, 300.0, 3), (20, 270.0, 260.0, 275.0, 3)]
    speed = speedups(results)
    # Median curve: 295 at 11 s to 270 at 21 s crosses 280 at 11 + 10 * 15 / 25 = 17 s; 600 / 17 = 35.3x.
    assert speed["fast"]["seconds"] == 17.0
    assert speed["fast"]["times_faster"] == pytest.approx(35.3)
    # Per seed: seed 1 reaches 266 never (270 at best): not reached; seed 2 reaches 290 at 12 s (at its
    # first budget): 620 / 12 = 51.7x; seed 3 reaches 280 at 11 + 10 * 15 / 20 = 18.5 s: 580 / 18.5 = 31.4x.
    per_seed = speed["fast"]["times_faster_per_seed"]
    assert per_seed == {"median": pytest.approx(41.5, abs=0.06), "min": 31.4, "max": 51.7, "n": 2,
                        "not_reached": 1}


def test_frontier_markdown_table_gives_median_and_range_per_budget(tmp_path, capsys):
    """The table docs/frontier.md shows, also re-made from a saved report (a frontier cut off midway)."""
    from benchmarks.frontier_report import PLAIN, main, markdown_table

    results = [frontier_point(PLAIN, None, 600.0 + s, 280.0 + s, seed=s) for s in (1, 2, 3)] + [
        frontier_point("fast", 10, 10.0, nll, seed=s) for s, nll in ((1, 300.0), (2, 290.0), (3, 296.5))]
    rows = markdown_table(results).splitlines()
    assert rows[2].startswith(f"| {PLAIN} | end (") and "| 3 | 602 | 282.00 [281.00, 283.00] |" in rows[2]
    assert rows[3].startswith("| fast | 10 s | 3 | 10 | 296.50 [290.00, 300.00] |")
    report = tmp_path / "frontier.json"
    report.write_text(json.dumps({"settings": {"configs": {PLAIN: None}}, "results": results}))
    main([str(report), "--plot", str(tmp_path / "frontier.png")])
    assert "| fast | 10 s |" in capsys.readouterr().out
    assert (tmp_path / "frontier.png").read_bytes()[:4] == b"\x89PNG"


def test_frontier_configurations_do_not_depend_on_params_defaults():
    from benchmarks.frontier import CONFIGS

    for name, spec in CONFIGS.items():
        if spec is not None:  # every project configuration names its prior, objective and precision
            assert {"prior"} <= set(spec["model"]), name
            assert {"objective", "precision"} <= set(spec["train"]), name


def test_frontier_appends_only_to_a_report_scored_the_same_way(tmp_path):
    from benchmarks.frontier_report import previous_report

    settings = {"data": "d", "train_images": None, "test_images": None, "val_images": 512,
                "iwae_samples": 100, "seed": 42, "plain_epochs": 30}
    report = tmp_path / "frontier.json"
    report.write_text(json.dumps({"settings": {**settings, "budgets_s": [60]}, "results": [{"config": "a"}]}))
    assert previous_report(report, {**settings, "plain_epochs": 5})["results"] == [{"config": "a"}]
    with pytest.raises(SystemExit, match="other settings \\(iwae_samples\\)"):
        previous_report(report, {**settings, "iwae_samples": 16})
    with pytest.raises(SystemExit, match="cannot append"):
        previous_report(tmp_path / "missing.json", settings)


def test_frontier_figure_shows_every_line_and_zooms_on_the_projects_configurations():
    from benchmarks.frontier_report import PLAIN, default_config, figure

    results = [
        frontier_point(PLAIN, 60, 60.0, 300.0),
        frontier_point(PLAIN, None, 600.0, 288.0),
        frontier_point("mixture", 10, 10.0, 280.0),
        frontier_point("mixture", 60, 58.0, 259.0),
        frontier_point("mixture", 480, 479.0, 253.0),
        frontier_point("normal", 60, 59.0, 261.0),
        frontier_point("normal", 480, 470.0, 254.0),
    ]
    configs = {PLAIN: None, "normal": {"model": {"prior": "normal"}},
               "mixture": {"model": {"prior": "mixture"}}}
    default = default_config(configs, {"model": {"prior": "mixture"}, "train": {}})
    assert default == "mixture"
    whole, zoom = figure(results, default).axes

    def lines(ax):
        return {line.get_label(): list(zip(line.get_xdata(), line.get_ydata())) for line in ax.get_lines()
                if not line.get_label().startswith("_")}

    assert lines(whole) == {
        PLAIN: [(60.0, 300.0), (600.0, 288.0)],
        "mixture (params.yaml)": [(10.0, 280.0), (58.0, 259.0), (479.0, 253.0)],
        "normal": [(59.0, 261.0), (470.0, 254.0)],
    }
    assert whole.get_xscale() == "log"
    assert [line.get_ydata()[0] for line in whole.get_lines() if line.get_linestyle() == ":"] == [288.0]
    # The zoom leaves out the plain example and the seconds before a minute, so a nat shows.
    assert lines(zoom) == {"mixture (params.yaml)": [(58.0, 259.0), (479.0, 253.0)],
                           "normal": [(59.0, 261.0), (470.0, 254.0)]}
    low, high = zoom.get_ylim()
    assert 250 < low < 253 and 261 < high < 265
    assert [t.get_text() for t in zoom.get_legend().get_texts()] == ["mixture (params.yaml)", "normal"]
    assert not whole.collections, "one seed: no range to shade"


def test_frontier_figure_draws_the_median_and_shades_the_range_over_seeds():
    from benchmarks.frontier_report import PLAIN, figure

    results = [
        frontier_point(PLAIN, None, 600.0, 290.0, seed=1), frontier_point(PLAIN, None, 610.0, 280.0, seed=2),
        frontier_point(PLAIN, None, 590.0, 270.0, seed=3),
        *(frontier_point("mixture", 60, 60.0 + i, nll, seed=i) for i, nll in ((1, 259.0), (2, 262.0), (3, 258.0))),
        *(frontier_point("mixture", 480, 480.0 + i, nll, seed=i) for i, nll in ((1, 253.0), (2, 252.0), (3, 255.0))),
    ]
    whole, zoom = figure(results).axes
    lines = {line.get_label(): list(zip(line.get_xdata(), line.get_ydata())) for line in zoom.get_lines()
             if not line.get_label().startswith("_")}  # not the bars' caps
    assert lines == {"mixture, 3 seeds": [(62.0, 259.0), (482.0, 253.0)]}
    band, bars = zoom.collections  # the range over seeds, between min and max at each budget: shaded, and as bars
    ys = band.get_paths()[0].vertices[:, 1]
    assert {258.0, 262.0, 252.0, 255.0} <= set(np.round(ys, 6))
    assert [np.round(segment, 6).tolist() for segment in bars.get_segments()] == [
        [[62.0, 258.0], [62.0, 262.0]], [[482.0, 252.0], [482.0, 255.0]]]
    assert [line.get_ydata()[0] for line in whole.get_lines() if line.get_linestyle() == ":"] == [280.0]


def test_frontier_append_skips_the_runs_it_already_has():
    from benchmarks.frontier import done_key
    from benchmarks.frontier_report import PLAIN

    assert done_key(frontier_point(PLAIN, 60, 60.0, 300.0, seed=7)) == (PLAIN, None, 7)  # one run per seed
    assert done_key(frontier_point("mixture", 480, 479.0, 253.0, seed=7)) == ("mixture", 480, 7)


def test_equal_time_epochs_never_exceed_the_references_time():
    from benchmarks.equal_time import equal_epochs

    assert equal_epochs(40, 1206.0, 2736.0) == 17  # 40 * 0.4408 = 17.6: the 18th epoch would take longer
    assert equal_epochs(40, 2736.0, 2736.0) == 40  # the reference itself, despite float rounding
    assert equal_epochs(40, 684.0, 2736.0) == 10
    assert equal_epochs(40, 10.0, 2736.0) == 1  # at least one epoch
    for speed in (500.0, 1206.0, 2000.0, 2735.9):
        epochs = equal_epochs(40, speed, 2736.0)
        assert epochs / speed <= 40 / 2736.0 < (epochs + 1) / speed


def test_equal_time_reads_each_trials_params_and_refuses_a_missing_trial_in_one_line():
    import optuna

    from benchmarks.equal_time import trial_params
    from fashion_vae.errors import PipelineError
    from fashion_vae.search import space as search_space
    from fashion_vae.search.rerun import raw_params

    raw = raw_params(REPO_ROOT / "params.yaml")
    spec = {"study": {"name": "timed", "trials": 2, "seeds": [1], "startup_trials": 1, "sampler_seed": 0, "jobs": 1,
                      "fixed": {"train.epochs": 10}},
            "space": {"model.dense_units": {"kind": "int", "low": 16, "high": 512},
                      "model.conv_filters": {"kind": "categorical", "choices": [[16, 32], [32, 64]]}}}
    space = search_space.validate(spec, raw)
    study = optuna.create_study(study_name="timed", directions=["minimize", "maximize"])
    study.enqueue_trial({"model.dense_units": 300, "model.conv_filters": "[16, 32]"})
    study.tell(study.ask(space.distributions()), [250.0, 0.7])
    configs = trial_params(space, study, [0], raw)
    cfg, values = configs[0]
    assert cfg["model"]["dense_units"] == 300 and cfg["model"]["conv_filters"] == [16, 32]
    assert cfg["train"]["epochs"] == 10 and values["train.epochs"] == 10
    assert cfg["evaluate"] == raw["evaluate"]  # untouched sections are params.yaml's own
    with pytest.raises(PipelineError, match=r"^trial 5 does not exist in study 'timed'"):
        trial_params(space, study, [0, 5], raw)


def test_equal_time_names_a_missing_study_in_one_line(tmp_path):
    """A storage without the study: one line naming the study and the storage, not Optuna's
    "Record does not exist."."""
    storage = f"sqlite:///{tmp_path}/empty.db"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.equal_time", "11", "--storage", storage, "--out", str(tmp_path / "r.json")],
        cwd=REPO_ROOT, env=project_env(), capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: no study named 'front-2026-11' in {storage}; run python -m fashion_vae.search run first")
    assert not (tmp_path / "r.json").exists()
