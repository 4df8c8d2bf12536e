"""Benchmark sweep file: the MiniLM example with learning curves, over a fixed grid.

``sweeps/minilm_rotten_tomatoes.py`` as it is, but evaluated every 12 steps (so
hyperband has a curve to read) over a grid of 8 learning rates, from too small
to too large, at batch 16: two sweeps of this file run the same 8 trials.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import Any

_MINILM = Path(__file__).resolve().parents[2] / "sweeps" / "minilm_rotten_tomatoes.py"
_spec = importlib.util.spec_from_file_location("wbsweep_bench_minilm", _MINILM)
assert _spec is not None and _spec.loader is not None
minilm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(minilm)

#: ``WBSWEEP_BENCH_LRS`` (comma-separated, read at ``create``) replaces the grid.
LEARNING_RATES = [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 3e-3]
SWEEP = {"method": "grid", "direction": "maximize", "metric": "accuracy"}

model_init = minilm.model_init
datasets = minilm.datasets
compute_metrics = minilm.compute_metrics
compute_objective = minilm.compute_objective
trainer_kwargs = minilm.trainer_kwargs


def hp_space(trial: Any) -> dict[str, Any]:
    chosen = os.environ.get("WBSWEEP_BENCH_LRS")
    rates = [float(x) for x in chosen.split(",")] if chosen else LEARNING_RATES
    return {"learning_rate": trial.suggest_categorical("learning_rate", rates)}


def training_args() -> Any:
    return dataclasses.replace(
        minilm.training_args(), eval_strategy="steps", eval_steps=12, output_dir="outputs/curves"
    )
