"""Test sweep file: ``record_ranks.py`` over a small grid, so two sweeps run the same trials.

``WBSWEEP_TEST_GRID_LRS`` (comma-separated, read at ``create``) sets the grid's
learning rates [default: 0.001,0.003].
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

_spec = importlib.util.spec_from_file_location(
    "wbsweep_test_record_ranks", Path(__file__).with_name("record_ranks.py")
)
assert _spec is not None and _spec.loader is not None
_ranks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ranks)

SWEEP = {"method": "grid", "direction": "minimize", "metric": "objective"}

model_init = _ranks.model_init
training_args = _ranks.training_args
datasets = _ranks.datasets
trainer_kwargs = _ranks.trainer_kwargs


def hp_space(trial: Any) -> dict[str, Any]:
    lrs = os.environ.get("WBSWEEP_TEST_GRID_LRS", "0.001,0.003").split(",")
    return {
        "learning_rate": trial.suggest_categorical("learning_rate", [float(x) for x in lrs]),
        "hidden_dropout_prob": trial.suggest_categorical("hidden_dropout_prob", [0.1]),
    }
