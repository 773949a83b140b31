"""Peak memory (RSS) of the train stage's work: a child that trains 1 epoch of params.yaml's configuration."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import ROOT


MEMORY_SCRIPT = r"""
import json, sys, time
from fashion_vae import params, prepared, training
cfg = params.load()
x_train, _ = prepared.load_split("data/prepared/train.npz")
x_val, _ = prepared.load_split("data/prepared/val.npz")
limit = int(sys.argv[1])
if limit > 0:
    x_train, x_val = x_train[:limit], x_val[: max(limit // 10, cfg["train"]["batch_size"])]
# One epoch of the stage's configuration (warm-up off: a 1-epoch cosine schedule needs it).
_, summary = training.train(cfg["model"], {**cfg["train"], "epochs": 1, "warmup_epochs": 0}, x_train, x_val, verbose=0)
print("SUMMARY " + json.dumps({**summary, "train_images": len(x_train)}))
"""


def bench_train_memory(limit: int, timeout: int = 480) -> dict:
    """Peak RSS of a child that trains 1 epoch with the params.yaml config (the train stage's work).

    ``os.wait4`` gives that child's own rusage (ru_maxrss, KiB on Linux), unlike
    RUSAGE_CHILDREN, which is the maximum over every child this process waited for.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory() as tmp:
        script, out_path, err_path = Path(tmp) / "train1.py", Path(tmp) / "out", Path(tmp) / "err"
        script.write_text(MEMORY_SCRIPT)
        start = time.perf_counter()
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen([sys.executable, str(script), str(limit)], cwd=ROOT, env=env, stdout=out,
                                    stderr=err)
            deadline = start + timeout
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    proc.kill()
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.2)
            proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        stdout, stderr = out_path.read_text(), err_path.read_text()
    if proc.returncode != 0:
        return {"max_rss_mib": None, "reason": f"training child failed (exit {proc.returncode}): "
                + " ".join(stderr.split())[-300:]}
    summary = next((json.loads(line[8:]) for line in stdout.splitlines() if line.startswith("SUMMARY ")), {})
    return {
        "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "train_images": summary.get("train_images"),
        "wall_seconds_including_startup": round(wall, 1),
        "train_summary": summary,
    }
