"""Quality against training time for a few configurations (how the defaults were chosen).

    python -m benchmarks.sweep '{"train": {"epochs": 6}}' '{"model": {"dense_units": 256}}' ...

Each argument is a JSON object of overrides on top of params.yaml's ``model`` and
``train`` sections. Every configuration is trained in a fresh process on the full
prepared training split (as ``dvc repro train`` would, validation included), then
scored on the test set: negative ELBO (one z per image), KL, and the 5-NN accuracy of
test z_mean fitted on train z_mean. Prints one JSON line per configuration and a
table at the end; runs one at a time, so the timings are comparable on a quiet machine.
Writes nothing.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

TAG = "SWEEP-RESULT "


def run_one(overrides: dict) -> dict:
    from fashion_vae import evaluation, params, prepared, training

    cfg = params.load()
    model_params = {**cfg["model"], **overrides.get("model", {})}
    train_params = {**cfg["train"], **overrides.get("train", {})}
    params.validate({**cfg, "model": model_params, "train": train_params})
    (x_train, y_train), (x_val, _), (x_test, y_test) = (
        prepared.load_split(f"data/prepared/{split}.npz") for split in ("train", "val", "test")
    )
    started = time.perf_counter()
    model, summary = training.train(model_params, train_params, x_train, x_val, verbose=0)
    train_seconds = time.perf_counter() - started
    terms = evaluation.elbo_terms(model, x_test, 1000, seed=42)
    train_z, _ = evaluation.encode(model, x_train)
    test_z, _ = evaluation.encode(model, x_test)
    return {
        "overrides": overrides,
        "epochs": summary["epochs"],
        "train_seconds": round(train_seconds, 1),
        "images_per_second": summary["train_images_per_second"],
        "val_loss": round(summary["val"]["loss"], 2),
        "test_neg_elbo": round(float((terms["reconstruction"] + terms["kl"]).mean()), 2),
        "test_kl": round(float(terms["kl"].mean()), 2),
        "knn5": round(evaluation.knn_accuracy(train_z, y_train, test_z, y_test, 5), 4),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--one"]:
        print(TAG + json.dumps(run_one(json.loads(argv[1]))), flush=True)
        return []
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return []
    results = []
    for spec in argv:
        json.loads(spec)  # fail early on a typo, before hours of training
    for spec in argv:
        out = subprocess.run([sys.executable, "-m", "benchmarks.sweep", "--one", spec],
                             capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith(TAG)]
        if out.returncode != 0 or not lines:
            print(f"{spec}: failed ({(out.stderr.strip().splitlines() or ['no output'])[-1]})", flush=True)
            continue
        results.append(json.loads(lines[-1][len(TAG):]))
        print(json.dumps(results[-1]), flush=True)
    print(f"\n{'overrides':70s} {'epochs':>6s} {'train s':>8s} {'img/s':>6s} {'-ELBO':>7s} {'KL':>5s} {'5-NN':>6s}")
    for r in results:
        print(f"{json.dumps(r['overrides']):70s} {r['epochs']:6d} {r['train_seconds']:8.0f} "
              f"{r['images_per_second']:6.0f} {r['test_neg_elbo']:7.2f} {r['test_kl']:5.2f} {r['knn5']:6.3f}")
    return results


if __name__ == "__main__":
    main()
