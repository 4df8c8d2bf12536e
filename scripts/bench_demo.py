"""Benchmark: the whole main job (``scripts/demo.sh``), cold against warm, side by side.

Runs ``scripts/demo.sh`` twice in fresh directories, ``DEMO_MODE=cold`` then
``DEMO_MODE=warm`` (same trials, workers and seed; the search is Bayesian, so
the trials' params may differ between the two), and prints each one's wall
time (first claim to last finish, and the whole script with its setup), the
time its trials ran (first step to end, summed) and spent between a claim and
the trial's first step (summed), its best accuracy, and the speed-up.

    python scripts/bench_demo.py [--trials 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def demo(mode: str, trials: int, workers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"wbsweep-demo-{mode}-") as tmp:
        env = {**os.environ, "DEMO_DIR": tmp, "DEMO_MODE": mode, "DEMO_TRIALS": str(trials),
               "DEMO_WORKERS": str(workers), "VIRTUAL_ENV": str(BIN.parent),
               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
        started = time.time()
        done = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], env=env,
                              capture_output=True, text=True)  # fmt: skip
        wall = time.time() - started
        if done.returncode != 0:
            raise SystemExit(f"demo ({mode}): exit {done.returncode}\n{done.stdout[-3000:]}")
        sweep_id = re.search(r"created sweep (\w+)", done.stdout).group(1)  # type: ignore[union-attr]
        status = subprocess.run(
            [str(BIN / "wbsweep"), "status", sweep_id, "--json"], env={**env, "WBSWEEP_STORE":
            str(Path(tmp) / ".wbsweep" / "store.db")}, capture_output=True, text=True, check=True,
        )  # fmt: skip
        runs = json.loads(status.stdout)["runs"]
    span = max(r["finished_at"] for r in runs) - min(r["claimed_at"] for r in runs)
    best = max(r["objective"] for r in runs if r["objective"] is not None)
    # The search is Bayesian: the two modes' trials differ (batch 8 trains twice the
    # steps of 16), so each mode's time in trials and in start-up is shown apart.
    trials = sum(r["finished_at"] - r["started_at"] for r in runs if r["started_at"])
    startup = sum(r["started_at"] - r["claimed_at"] for r in runs if r["started_at"])
    return {"wall": wall, "span": span, "finished": sum(r["state"] == "finished" for r in runs),
            "best": best, "trials": trials, "startup": startup}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args()
    got = {mode: demo(mode, options.trials, options.workers) for mode in ("cold", "warm")}
    print(f"scripts/demo.sh: {options.trials} MiniLM trials on {options.workers} workers, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'mode':<5} {'finished':>8} {'sweep s':>8} {'demo s':>7} {'in trials s':>11} "
          f"{'claim to 1st step s':>19} {'best acc':>8}")  # fmt: skip
    for mode, r in got.items():
        print(f"{mode:<5} {r['finished']:>8} {r['span']:>8.0f} {r['wall']:>7.0f} "
              f"{r['trials']:>11.0f} {r['startup']:>19.1f} {r['best']:>8.4f}")  # fmt: skip
    print(
        f"warm is {got['cold']['span'] / got['warm']['span']:.2f}x faster over the sweep "
        f"(first claim to last finish), {got['cold']['wall'] / got['warm']['wall']:.2f}x "
        "over the whole demo (setup and report included)"
    )


if __name__ == "__main__":
    main()
