"""Benchmark: the compute hyperband saves, on the MiniLM example's real learning curves.

Two sweeps of the same 8 trials (``scripts/bench/minilm_curves.py``: a grid of
learning rates, evaluated every 12 steps) on the local backend, one warm
worker of one process each: one without early termination, one with
``--hyperband-min-iter 1 --hyperband-eta 2``. Prints, for each, the trials
finished and stopped, the compute spent (the sum of the trials' training time,
first step to end), the best eval accuracy, and the wall time; then the
compute saved and whether both found the same best run.

    python scripts/bench_hyperband.py [--min-iter 1] [--eta 2]

About 8 minutes on 2 CPU cores. Needs the example's data (``scripts/fetch_data.sh``).
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

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SWEEP = REPO / "scripts" / "bench" / "minilm_curves.py"


def sweep(extra: list[str], data: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="wbsweep-bench-hyperband-") as tmp:
        work = Path(tmp)
        env = {
            **os.environ, "WBSWEEP_STORE": str(work / "store.db"), "WANDB_MODE": "offline",
            "WANDB_DIR": str(work), "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
            "WBSWEEP_RT_DATA": data, "TOKENIZERS_PARALLELISM": "false",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }  # fmt: skip

        def wbsweep(*args: str) -> str:
            done = subprocess.run([str(BIN / "wbsweep"), *args], env=env, cwd=work,
                                  capture_output=True, text=True)  # fmt: skip
            if done.returncode != 0:
                raise SystemExit(
                    f"wbsweep {args[0]}: exit {done.returncode}\n{done.stdout[-3000:]}"
                )
            return done.stdout

        sweep_id = json.loads(wbsweep("create", str(SWEEP), "--json", *extra))["sweep_id"]
        started = time.time()
        wbsweep("agent", sweep_id, "--warm")
        wall = time.time() - started
        runs = json.loads(wbsweep("status", sweep_id, "--json"))["runs"]
    spent = sum(r["finished_at"] - r["started_at"] for r in runs if r["started_at"])
    scored = [r for r in runs if r["objective"] is not None]
    best = max(scored, key=lambda r: r["objective"])
    return {
        "finished": sum(r["state"] == "finished" for r in runs),
        "stopped": sum(r["state"] == "stopped" for r in runs),
        "compute": spent, "wall": wall, "best": best["objective"],
        "best_lr": best["params"]["learning_rate"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-iter", type=int, default=1)
    parser.add_argument("--eta", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 trials: check the script")
    options = parser.parse_args()
    if options.quick:
        os.environ["WBSWEEP_BENCH_LRS"] = "1e-4,3e-3"
    data = os.environ.get("WBSWEEP_RT_DATA") or subprocess.run(
        ["bash", str(REPO / "scripts" / "fetch_data.sh")], capture_output=True, text=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    plain = sweep([], data)
    early = sweep(["--hyperband-min-iter", str(options.min_iter),
                   "--hyperband-eta", str(options.eta)], data)  # fmt: skip
    trials = plain["finished"] + plain["stopped"]
    print(f"{trials:.0f} MiniLM trials (grid of learning rates), 1 warm worker, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'sweep':<22} {'finished':>8} {'stopped':>7} {'compute s':>9} {'best acc':>8} "
          f"{'best lr':>8} {'wall s':>7}")  # fmt: skip
    for name, got in (("no early termination", plain),
                      (f"hyperband min {options.min_iter} eta {options.eta}", early)):  # fmt: skip
        print(f"{name:<22} {got['finished']:>8} {got['stopped']:>7} {got['compute']:>9.0f} "
              f"{got['best']:>8.4f} {got['best_lr']:>8.0e} {got['wall']:>7.0f}")  # fmt: skip
    saved = 1 - early["compute"] / plain["compute"]
    same = "the same best run" if early["best_lr"] == plain["best_lr"] else "a different best run"
    print(
        f"hyperband saved {saved:.0%} of the compute and found {same} "
        f"(best accuracy {early['best']:.4f} against {plain['best']:.4f})"
    )


if __name__ == "__main__":
    main()
