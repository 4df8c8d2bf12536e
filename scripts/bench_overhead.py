"""Benchmark: what a sweep spends outside training, cold against warm against Transformers.

The same task and trials for each mode (``scripts/bench/timed_sweep.py``:
``sweeps/tiny.py``'s 2-layer BERT with a clock on rank 0), one worker:

* ``cold``: ``wbsweep agent`` (a new ``accelerate launch`` per trial);
* ``warm``: ``wbsweep agent --warm`` (one process group for every trial);
* ``optuna``: Transformers' ``Trainer.hyperparameter_search(backend="optuna")``
  in one process (``scripts/bench/optuna_search.py``);
* ``wandb-cold``, ``wandb-warm``: the same two on the W&B backend, the real SDK
  online against the W&B test double (``tests/wandb_double``) on this machine,
  with the SDK's default settings: what the SDK and its agents add, without the
  network's round trips to a real server.

Per mode it prints the per-trial orchestration overhead — from the end of one
trial's final evaluation to the first optimizer step of the next trial on the
same worker — as p50 and p90, and the fraction of the agent's wall time spent
inside training (train begin to final evaluation, summed over trials). The
wbsweep modes log every trial to its own offline W&B run; Transformers' search
logs nowhere.

    python scripts/bench_overhead.py [--trials 8] [--modes cold,warm,optuna]
        [--ranks 1] [--trial-seconds 0]   (modes also: wandb-cold, wandb-warm)

``--trial-seconds S`` makes each trial train for S seconds (20 s or 120 s for
the training fraction of longer trials). The ``optuna`` mode needs Optuna
(``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SWEEP = REPO / "scripts" / "bench" / "timed_sweep.py"
OPTUNA = REPO / "scripts" / "bench" / "optuna_search.py"


def _env(work: Path, times: Path, seconds: float) -> dict[str, str]:
    return {
        **os.environ,
        "WBSWEEP_STORE": str(work / "store.db"),
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(work),
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(work / "hf"),
        "TOKENIZERS_PARALLELISM": "false",
        "WBSWEEP_BENCH_TIMES": str(times),
        "WBSWEEP_BENCH_SECONDS": str(seconds),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def run_mode(mode: str, trials: int, ranks: int, seconds: float) -> dict[str, float]:
    """Run one mode in a fresh directory; its figures."""
    with tempfile.TemporaryDirectory(prefix=f"wbsweep-bench-{mode}-") as tmp:
        work = Path(tmp)
        times = work / "times.jsonl"
        env = _env(work, times, seconds)
        with contextlib.ExitStack() as stack:
            backend = []
            if mode.startswith("wandb-"):
                double = stack.enter_context(_wandb_double())
                env = {k: v for k, v in env.items() if k != "WANDB_SERVICE"}
                env.update(double.env(lean=False))
                backend = ["--backend", "wandb", "--project", "bench"]
            if mode == "optuna":
                argv = [sys.executable, str(OPTUNA), str(trials)]
            else:
                created = subprocess.run(
                    [str(BIN / "wbsweep"), "create", str(SWEEP), "--n-trials", str(trials),
                     "--processes-per-trial", str(ranks), "--json", *backend],
                    env=env, cwd=work, capture_output=True, text=True, check=True,
                )  # fmt: skip
                sweep_id = json.loads(created.stdout)["sweep_id"]
                argv = [str(BIN / "wbsweep"), "agent", sweep_id]
                argv += ["--warm"] if mode.endswith("warm") else ["--cold"]
            started = time.time()
            done = subprocess.run(argv, env=env, cwd=work, capture_output=True, text=True)
            wall = time.time() - started
        if done.returncode != 0:
            raise SystemExit(f"{mode}: exit {done.returncode}\n{done.stdout[-3000:]}")
        return figures(times, wall)


def _wandb_double() -> Any:
    """A started W&B test double (``tests/wandb_double``), as a context manager."""
    sys.path.insert(0, str(REPO / "tests"))
    from wandb_double import WandbDouble

    return WandbDouble()


def figures(times: Path, wall: float) -> dict[str, float]:
    """Overhead between trials and the training fraction, from the clock's events."""
    events = [json.loads(line) for line in times.read_text().splitlines() if line.strip()]
    trials: list[dict[str, float]] = []
    for event in events:  # one worker: the events of a trial come in order
        if event["event"] == "train_begin":
            trials.append({"train_begin": event["t"]})
        elif trials:
            if event["event"] == "first_step" and "first_step" not in trials[-1]:
                trials[-1]["first_step"] = event["t"]
            elif event["event"] == "evaluate":
                trials[-1]["end"] = event["t"]
    trials = [t for t in trials if {"first_step", "end"} <= set(t)]
    gaps = [b["first_step"] - a["end"] for a, b in zip(trials, trials[1:], strict=False)]
    inside = sum(t["end"] - t["train_begin"] for t in trials)
    out: dict[str, float] = defaultdict(float)
    out.update(trials=len(trials), wall=wall, inside=inside / wall if wall else 0.0)
    if gaps:
        out["p50"] = statistics.median(gaps)
        out["p90"] = statistics.quantiles(gaps, n=10)[-1] if len(gaps) > 1 else gaps[0]
        out["first"] = trials[0]["first_step"] - (trials[0]["train_begin"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--modes", default="cold,warm,optuna")
    parser.add_argument("--ranks", type=int, default=1, help="ranks per trial (wbsweep modes)")
    parser.add_argument("--trial-seconds", type=float, default=0.0)
    options = parser.parse_args()
    modes = [m.strip() for m in options.modes.split(",") if m.strip()]
    length = f"{options.trial_seconds:g} s trials" if options.trial_seconds else "tiny.py trials"
    print(f"{options.trials} {length}, one worker, {options.ranks} rank(s) per wbsweep trial, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'mode':<10} {'trials':>6} {'overhead p50':>13} {'p90':>7} {'in training':>12} "
          f"{'wall':>8}")  # fmt: skip
    results = {}
    for mode in modes:
        if mode == "optuna" and importlib.util.find_spec("optuna") is None:
            print("optuna: not installed (pip install -e '.[bench]'); skipped", flush=True)
            continue
        got = run_mode(mode, options.trials, options.ranks, options.trial_seconds)
        results[mode] = got
        print(
            f"{mode:<10} {int(got['trials']):>6} {got['p50']:>11.3f} s {got['p90']:>5.3f} s "
            f"{got['inside'] * 100:>11.1f}% {got['wall']:>6.1f} s",
            flush=True,
        )
    if "wandb-warm" in results and "wandb-cold" in results and results["wandb-warm"]["p50"]:
        ratio = results["wandb-cold"]["p50"] / results["wandb-warm"]["p50"]
        print(f"on W&B, cold / warm overhead p50: {ratio:.1f}x")
    if "warm" in results and "optuna" in results and results["optuna"]["p50"]:
        ratio = results["warm"]["p50"] / results["optuna"]["p50"]
        print(f"warm / optuna overhead p50: {ratio:.2f}")
    if "warm" in results and "cold" in results and results["warm"]["p50"]:
        print(f"cold / warm overhead p50: {results['cold']['p50'] / results['warm']['p50']:.1f}x")


if __name__ == "__main__":
    main()
