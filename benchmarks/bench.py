"""Performance benchmark of the pipeline (issue 6): training, evaluation, DVC, memory.

    python -m benchmarks.bench [--quick] [--out PATH] [--onednn auto|on|off]
                               [--train-images N] [--reps R] [--iwae-images N]
                               [--skip-dvc] [--skip-memory] [--no-plain-same-runtime]

One run, on the real prepared data (about 2 minutes on a quiet 2-core machine; --quick under 1), measures:

* steady-state training throughput (images/s, achieved GFLOP/s) of the project's own
  train step (``fashion_vae.training``: the VAE compiled as ``train()`` compiles it,
  ``model.fit`` on ``make_dataset``, ``configure_runtime`` applied) for the seed
  architecture at batch 128 and for the params.yaml default configuration;
* the plain keras.io VAE example (functional encoder/decoder, sigmoid output,
  ``keras.losses.binary_crossentropy``, ``fit(x, batch_size=128)`` on numpy), written
  here, run twice: in a child process with TensorFlow's default settings (the
  reference for the ratios) and in this process under the project's runtime settings;
  all configurations run ALTERNATELY, one epoch each per repetition, after a warm-up
  epoch; median, min/max and IQR over repetitions, epoch time from callbacks;
* FLOPs per training image, counted analytically from the layer shapes;
* numpy float32 2048^2 matmul FLOP/s of this machine at the start, middle and end of
  the run, and every throughput as a fraction of the best of them;
* evaluation throughput: the ELBO pass and the IWAE pass (K = evaluate.iwae_samples)
  of ``fashion_vae.evaluation``;
* ``dvc repro`` no-op time (only when ``dvc status`` is clean) and the peak RSS of a
  child that trains 1 epoch of the params.yaml configuration on the full train split.

It prints a table and writes JSON (default benchmarks/results.json). Nothing in the
repository other than that JSON file is written.

This module is the command line and the run's order; the parts live beside it:
machine.py (CPU, versions, matmul ceiling), flops.py (FLOP counts, seed architecture),
plain_vae.py (the keras.io example), runners.py (the configurations timed),
interleave.py (interleaved epochs and their statistics), eval_throughput.py,
memory.py (peak RSS), dvc_noop.py and report.py (table and JSON).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path

# Before anything imports Keras or TensorFlow (the plain child included).
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import ROOT  # noqa: E402
from benchmarks.dvc_noop import bench_dvc_noop  # noqa: E402
from benchmarks.eval_throughput import bench_evaluation  # noqa: E402
from benchmarks.flops import REFERENCE_MFLOP, SEED_BATCH, SEED_MODEL, flops_per_image  # noqa: E402
from benchmarks.interleave import EpochFitter, bench_training, summarise  # noqa: E402
from benchmarks.machine import machine_info, matmul_gflops, versions  # noqa: E402
from benchmarks.memory import bench_train_memory  # noqa: E402
from benchmarks.report import print_table, write_json  # noqa: E402
from benchmarks.runners import ChildPlainRunner, plain_runner, plain_worker, project_runner  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results.json"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run (~1 min): small subsets, 2 reps, no dvc")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results file (default {DEFAULT_OUT.relative_to(ROOT)})")
    p.add_argument("--train-images", type=int, help="train images per timed epoch (default 8192; quick 1024)")
    p.add_argument("--reps", type=int, help="interleaved timed epochs per configuration (default 4; quick 2)")
    p.add_argument("--iwae-images", type=int, help="test images for the IWAE pass (default 32; quick 2)")
    p.add_argument("--skip-dvc", action="store_true", help="do not time `dvc repro` (always skipped with --quick)")
    p.add_argument("--skip-memory", action="store_true", help="do not run the 1-epoch training child")
    p.add_argument("--no-plain-same-runtime", action="store_true",
                   help="skip the plain example under the project's runtime settings (in-process)")
    p.add_argument("--onednn", choices=("auto", "on", "off"), default="auto",
                   help="TF_ENABLE_ONEDNN_OPTS for this process (not the TF-defaults plain child): "
                        "auto leaves the environment and the project's own setting alone")
    p.add_argument("--plain-worker", nargs=2, type=int, metavar=("N", "SEED"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.plain_worker:
        return plain_worker(*args.plain_worker)
    quick = args.quick
    n_train = args.train_images or (1024 if quick else 8192)
    reps = args.reps or (2 if quick else 4)
    n_iwae = args.iwae_images or (2 if quick else 32)

    os.chdir(ROOT)
    if args.onednn != "auto":  # before anything imports TensorFlow
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if args.onednn == "on" else "0"
    from fashion_vae import params, prepared, training

    cfg = params.load()
    train_params, model_params = cfg["train"], cfg["model"]
    started = time.perf_counter()
    info = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": None,
        "settings": {
            "quick": quick, "onednn_option": args.onednn, "train_images": n_train, "reps": reps, "iwae_images": n_iwae,
            "threads": train_params["threads"],
            "onednn": None,
            "env": {k: os.environ.get(k) for k in ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS",
                                                   "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")},
        },
    }
    mm_n, mm_reps = (1024, 5) if quick else (2048, 7)
    peak_start = matmul_gflops(mm_n, mm_reps)  # before TensorFlow starts its thread pools

    training.configure_runtime(train_params["seed"], train_params["threads"])  # determinism on, pinned threads
    info["versions"] = versions()
    from tensorflow.python.util import _pywrap_util_port

    info["settings"]["onednn"] = bool(_pywrap_util_port.IsMklEnabled())
    x_train, _ = prepared.load_split("data/prepared/train.npz")
    x_test, _ = prepared.load_split("data/prepared/test.npz")
    x = x_train[:n_train]

    seed_train = {**train_params, "batch_size": SEED_BATCH}
    default_is_seed = (
        {k: model_params[k] for k in SEED_MODEL} == SEED_MODEL and train_params["batch_size"] == SEED_BATCH
    )
    child = ChildPlainRunner(len(x), train_params["seed"])
    runners = [child, project_runner("ours (seed, batch 128)", SEED_MODEL, seed_train, x)]
    if not default_is_seed:
        runners.append(project_runner("ours (params.yaml default)", model_params, train_params, x))
    if not args.no_plain_same_runtime:
        runners.append(plain_runner(x, train_params["seed"]))
    flops_seed = flops_per_image(SEED_MODEL)
    peak_mid = matmul_gflops(mm_n, mm_reps)
    peak = max(peak_start, peak_mid)
    try:
        train_results = bench_training(runners, reps, peak)
    finally:
        child.close()
        for r in runners:
            if isinstance(r.epoch, EpochFitter):
                r.epoch.join()
    peak_end = matmul_gflops(mm_n, mm_reps)
    peak = max(peak, peak_end)
    for r in runners:  # re-express against the best matmul rate seen in the run
        res = train_results[r.name]
        res["fraction_of_matmul_peak"] = res["gflops"]["median"] / peak
    plain = train_results[runners[0].name]["images_per_second"]["median"]
    ratios = {r.name: train_results[r.name]["images_per_second"]["median"] / plain for r in runners[1:]}
    plain_ips = [runners[0].images_per_epoch / s for s in runners[0].seconds]
    per_rep_ratio = {
        r.name: summarise([(r.images_per_epoch / s) / p for s, p in zip(r.seconds, plain_ips)]) for r in runners[1:]
    }
    if default_is_seed:
        train_results["ours (params.yaml default)"] = {"same_as": "ours (seed, batch 128)"}

    eval_results = bench_evaluation(runners[1].model, x_test, cfg["evaluate"], 1000 if quick else len(x_test),
                                    n_iwae, 2 if quick else 3)
    memory = {"max_rss_mib": None, "reason": "skipped (--skip-memory)"}
    if not args.skip_memory:
        memory = bench_train_memory(1024 if quick else 0)
    dvc = {"seconds": None, "reason": "skipped (--quick)" if quick else "skipped (--skip-dvc)"}
    if not (quick or args.skip_dvc):
        dvc = bench_dvc_noop()
    results = {
        **info,
        "matmul": {"n": mm_n, "gflops_start": peak_start, "gflops_mid": peak_mid, "gflops_end": peak_end,
                   "gflops_used": peak},
        "flops_per_image": {
            "seed": {**flops_seed, "reference_mflop": REFERENCE_MFLOP,
                     "matches_reference": abs(flops_seed["forward_flop"] / 1e6 - REFERENCE_MFLOP["forward"]) < 0.1
                     and abs(flops_seed["train_flop"] / 1e6 - REFERENCE_MFLOP["train"]) < 0.15},
            "default": flops_per_image(model_params),
        },
        "training": train_results,
        "ratio_over_plain_defaults": ratios,
        "ratio_over_plain_defaults_per_rep": per_rep_ratio,
        "evaluation": eval_results,
        "dvc_repro_noop": dvc,
        "train_stage_memory": memory,
        "load_average_at_end": list(os.getloadavg()),
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    print_table(results)
    write_json(args.out, results)
    print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
