"""How long ``dvc repro`` takes when there is nothing to do (only timed when ``dvc status`` is clean)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from benchmarks import ROOT


def bench_dvc_noop(timeout: int = 300) -> dict:
    dvc = Path(sys.executable).with_name("dvc")
    if not (ROOT / "dvc.yaml").exists():
        return {"seconds": None, "reason": "no dvc.yaml in the repository"}
    if not dvc.exists():
        return {"seconds": None, "reason": f"{dvc} not found"}
    status = subprocess.run([str(dvc), "status"], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    text = (status.stdout + status.stderr).strip()
    if status.returncode != 0 or "up to date" not in text:
        return {"seconds": None, "reason": "dvc status is not up to date: " + " ".join(text.split())[:300]}
    runs = []
    for _ in range(2):
        start = time.perf_counter()
        proc = subprocess.run([str(dvc), "repro"], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        runs.append(time.perf_counter() - start)
        if proc.returncode != 0:
            return {"seconds": None, "reason": "dvc repro failed: " + " ".join(proc.stderr.split())[:300]}
    return {"seconds": min(runs), "runs": runs}
