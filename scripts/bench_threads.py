"""CPU threads per rank: the same 4-trial local sweep with 1 and with 2 workers, before and after.

On a CPU node every rank's torch would start one thread per core, so 2 workers of 1 rank on
2 cores run 4 threads on 2 cores. ``wbsweep agent`` now gives each rank its share of the
cores (``OMP_NUM_THREADS`` = physical cores / (workers x ranks)) unless you set it yourself.
"Before" sets ``OMP_NUM_THREADS`` to the core count, which is what each rank took before.

    python scripts/bench_threads.py [--trials 4]

Prints the wall time of each case. Not a CI test: it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TINY = REPO / "sweeps" / "tiny.py"


def run_sweep(trials: int, workers: int, threads: str | None) -> float:
    """Seconds for ``wbsweep agent --workers N`` to finish a fresh ``trials``-run sweep."""
    with tempfile.TemporaryDirectory(prefix="wbsweep-bench-threads-") as tmp:
        store = str(Path(tmp) / "store.db")
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        env.update({"WANDB_MODE": "disabled", "CUDA_VISIBLE_DEVICES": ""})
        if threads is not None:
            env["OMP_NUM_THREADS"] = threads
        created = subprocess.run(
            [str(BIN / "wbsweep"), "create", str(TINY), "--store", store, "--json",
             "--n-trials", str(trials), "--method", "random"],
            capture_output=True, text=True, env=env, cwd=tmp, check=True,
        )  # fmt: skip
        sweep_id = json.loads(created.stdout)["sweep_id"]
        start = time.monotonic()
        subprocess.run(
            [str(BIN / "wbsweep"), "agent", sweep_id, "--store", store, "--workers", str(workers)],
            capture_output=True, env=env, cwd=tmp, check=True,
        )  # fmt: skip
        return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    options = parser.parse_args()
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    print(f"{options.trials} trials of sweeps/tiny.py, {cores} physical cores")
    print(f"{'workers':>7}  {'before (all cores each)':>24}  {'after (cores shared)':>21}")
    for workers in (1, 2):
        before = run_sweep(options.trials, workers, str(cores))
        after = run_sweep(options.trials, workers, None)
        print(f"{workers:>7}  {before:>22.1f} s  {after:>19.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
