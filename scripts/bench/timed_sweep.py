"""Benchmark sweep file: ``sweeps/tiny.py`` with a clock on every trial.

Rank 0 appends one JSON line per event to ``$WBSWEEP_BENCH_TIMES``:
``train_begin``, ``first_step`` (the end of the first optimizer step) and
``evaluate`` (each evaluation; the last one is the trial's final evaluation),
with the trial's output dir, the process id and ``time.time()``. The same
callback serves wbsweep (through ``trainer_kwargs``) and Transformers' own
``hyperparameter_search`` (``scripts/bench/optuna_search.py``), so both are
measured by the same instrument.

``WBSWEEP_BENCH_SECONDS=S`` makes each trial train for S seconds (then it
stops and evaluates), for trials of a chosen length.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

_TINY = Path(__file__).resolve().parents[2] / "sweeps" / "tiny.py"
_spec = importlib.util.spec_from_file_location("wbsweep_bench_tiny", _TINY)
assert _spec is not None and _spec.loader is not None
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

SWEEP = {"method": "random", "direction": "minimize", "metric": "eval_loss"}

hp_space = tiny.hp_space
model_init = tiny.model_init
datasets = tiny.datasets


def training_args() -> Any:
    args = tiny.training_args()
    seconds = float(os.environ.get("WBSWEEP_BENCH_SECONDS", "0") or 0)
    if seconds > 0:  # a long enough run, cut at S seconds by the clock below
        args = dataclasses.replace(args, max_steps=10**7, logging_steps=500)
    return dataclasses.replace(args, output_dir="outputs/bench")


def clock() -> Any:
    """The TrainerCallback that writes the events (rank 0 only)."""
    from transformers import TrainerCallback

    path = os.environ.get("WBSWEEP_BENCH_TIMES")
    seconds = float(os.environ.get("WBSWEEP_BENCH_SECONDS", "0") or 0)

    def write(event: str, args: Any) -> None:
        if path:
            line = {"event": event, "run": args.output_dir, "pid": os.getpid(), "t": time.time()}
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")

    class Clock(TrainerCallback):
        began = 0.0
        stepped = False

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.began, self.stepped = time.time(), False
            if state.is_world_process_zero:
                write("train_begin", args)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not self.stepped and state.is_world_process_zero:
                write("first_step", args)
            self.stepped = True
            if seconds > 0 and time.time() - self.began >= seconds:
                control.should_training_stop = True

        def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                write("evaluate", args)

    return Clock()


def trainer_kwargs() -> dict[str, Any]:
    return {"callbacks": [clock()]}
