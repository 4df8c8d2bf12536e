"""Test sweep file: a 12-point grid whose trial is a trivial user-written command.

The command (W&B macros, separate argv tokens) writes the params it was given
to ``$WBSWEEP_TEST_RECORD_DIR/<run id>.json``; nothing is trained. With
``WBSWEEP_TEST_FAIL_BATCH=N`` the trials with batch size N exit with code 3;
with ``WBSWEEP_TEST_WANDB=1`` each trial joins its W&B run and logs an objective.
``WBSWEEP_TEST_GRID_LRS`` / ``WBSWEEP_TEST_GRID_BATCHES`` (comma-separated, read
at ``create``) shrink the grid.
"""

from __future__ import annotations

import os
from typing import Any

RECORD = (
    "import json, os, sys; "
    "params = json.load(open(sys.argv[1])); "
    "out = os.path.join(os.environ['WBSWEEP_TEST_RECORD_DIR'], "
    "os.environ['WANDB_RUN_ID'] + '.json'); "
    "json.dump({'params': params, 'pid': os.getpid()}, open(out, 'w')); "
    "fail = os.environ.get('WBSWEEP_TEST_FAIL_BATCH'); "
    "on = os.environ.get('WBSWEEP_TEST_WANDB'); run = __import__('wandb').init() if on else None; "
    "lr, batch = params['learning_rate'], params['per_device_train_batch_size']; "
    "run and run.log({'objective': lr * batch}); "
    "sys.exit(3 if fail and int(fail) == batch else 0)"
)


def hp_space(trial: Any) -> dict[str, Any]:
    return {
        "method": "grid",
        "metric": {"name": "objective", "goal": "minimize"},
        "parameters": {
            "learning_rate": {"values": _numbers("WBSWEEP_TEST_GRID_LRS", "1e-4,3e-4,1e-3", float)},
            "per_device_train_batch_size": {
                "values": _numbers("WBSWEEP_TEST_GRID_BATCHES", "8,16,32,64", int)
            },
        },
        "command": ["${env}", "${interpreter}", "-c", RECORD, "${args_json_file}"],
    }


def _numbers(name: str, default: str, kind: type) -> list[Any]:
    return [kind(x) for x in os.environ.get(name, default).split(",")]


def model_init(trial: dict[str, Any] | None) -> Any:  # never called: the command trains nothing
    raise NotImplementedError


def training_args() -> Any:
    raise NotImplementedError


def datasets() -> Any:
    raise NotImplementedError
