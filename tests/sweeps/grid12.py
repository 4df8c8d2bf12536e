"""Test sweep file: a 12-point grid whose trial is a trivial user-written command.

The command (W&B macros, separate argv tokens) writes the params it was given
to ``$WBSWEEP_TEST_RECORD_DIR/<run id>.json``; nothing is trained. With
``WBSWEEP_TEST_FAIL_BATCH=N`` the trials with batch size N exit with code 3.
"""

from __future__ import annotations

from typing import Any

RECORD = (
    "import json, os, sys; "
    "params = json.load(open(sys.argv[1])); "
    "out = os.path.join(os.environ['WBSWEEP_TEST_RECORD_DIR'], "
    "os.environ['WANDB_RUN_ID'] + '.json'); "
    "json.dump({'params': params, 'pid': os.getpid()}, open(out, 'w')); "
    "fail = os.environ.get('WBSWEEP_TEST_FAIL_BATCH'); "
    "sys.exit(3 if fail and int(fail) == params['per_device_train_batch_size'] else 0)"
)


def hp_space(trial: Any) -> dict[str, Any]:
    return {
        "method": "grid",
        "metric": {"name": "objective", "goal": "minimize"},
        "parameters": {
            "learning_rate": {"values": [1e-4, 3e-4, 1e-3]},
            "per_device_train_batch_size": {"values": [8, 16, 32, 64]},
        },
        "command": ["${env}", "${interpreter}", "-c", RECORD, "${args_json_file}"],
    }


def model_init(trial: dict[str, Any] | None) -> Any:  # never called: the command trains nothing
    raise NotImplementedError


def training_args() -> Any:
    raise NotImplementedError


def datasets() -> Any:
    raise NotImplementedError
