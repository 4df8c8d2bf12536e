"""Test sweep file: ``sweeps/tiny.py`` plus a record of what every rank saw.

Each rank appends JSON lines to ``$WBSWEEP_TEST_RECORD_DIR/rank<r>-<pid>.jsonl``:
``{"event": "model_init", ...}`` when ``model_init`` runs and
``{"event": "train_begin", ...}`` from a callback with the arguments the Trainer
actually used, so tests can assert that both ranks trained alike.

Environment knobs:

* ``WBSWEEP_TEST_RECORD_DIR``: where to write (nothing is written without it).
* ``WBSWEEP_TEST_FAIL_IF=name=value``: ``model_init`` raises when the trial's
  param ``name`` equals ``value`` (compared as JSON or as text).
* ``WBSWEEP_TEST_FAIL_ONCE=path``: ``model_init`` raises once, when ``path`` does not
  exist yet (it is made then).
* ``WBSWEEP_TEST_SLEEP``: seconds to sleep after each step (so a test can stop a
  running trial), until a file named by ``WBSWEEP_TEST_SLEEP_UNLESS`` exists.
* ``WBSWEEP_TEST_KILL_ONCE=path``: rank 1 SIGKILLs itself at its first step, once
  (``path`` is made then): a rank the OOM killer takes.

``datasets()`` records a ``datasets`` event each time it builds them.

The Trainer reports to W&B here (``report_to=["wandb"]``), so tests can check
that its ``WandbCallback`` logs into the trial's own run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

_TINY = Path(__file__).resolve().parents[2] / "sweeps" / "tiny.py"
_spec = importlib.util.spec_from_file_location("wbsweep_test_tiny_sweep", _TINY)
assert _spec is not None and _spec.loader is not None
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

SWEEP = {"method": "random", "direction": "minimize", "metric": "objective", "n_trials": 2}

hp_space = tiny.hp_space


def datasets() -> tuple[Any, Any]:
    _record("datasets")
    return tiny.datasets()


def _rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def _record(event: str, **fields: Any) -> None:
    directory = os.environ.get("WBSWEEP_TEST_RECORD_DIR")
    if not directory:
        return
    line = {"event": event, "rank": _rank(), "pid": os.getpid(), **fields}
    path = Path(directory) / f"rank{_rank()}-{os.getpid()}.jsonl"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, default=str) + "\n")


def _fails(params: dict[str, Any]) -> bool:
    rule = os.environ.get("WBSWEEP_TEST_FAIL_IF")
    if not rule or "=" not in rule:
        return False
    name, wanted = rule.split("=", 1)
    if name not in params:
        return False
    value = params[name]
    try:
        return value == json.loads(wanted)
    except json.JSONDecodeError:
        return str(value) == wanted


def _fails_once() -> bool:
    mark = os.environ.get("WBSWEEP_TEST_FAIL_ONCE")
    if not mark or os.path.exists(mark):
        return False
    Path(mark).touch()
    return True


def model_init(trial: dict[str, Any] | None) -> Any:
    params = dict(trial or {})
    _record("model_init", params=params)
    if _fails(params):
        raise ValueError(f"model_init refuses {os.environ['WBSWEEP_TEST_FAIL_IF']}")
    if _fails_once():
        raise ValueError("model_init fails once, as asked")
    return tiny.model_init(params)


def training_args() -> Any:
    args = tiny.training_args()
    # An evaluation each epoch, so the objective has a history (what hyperband reads).
    return dataclasses.replace(
        args, output_dir="outputs/record_ranks", report_to=["wandb"], eval_strategy="epoch"
    )


def trainer_kwargs() -> dict[str, Any]:
    import torch
    from accelerate.state import AcceleratorState
    from transformers import TrainerCallback

    class RecordRank(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            config = getattr(kwargs.get("model"), "config", None)
            _record(
                "train_begin",
                world_size=args.world_size,
                process_index=args.process_index,
                learning_rate=args.learning_rate,
                per_device_train_batch_size=args.per_device_train_batch_size,
                lr_scheduler_type=str(getattr(args.lr_scheduler_type, "value", "")),
                output_dir=args.output_dir,
                hidden_dropout_prob=getattr(config, "hidden_dropout_prob", None),
                mixed_precision=str(AcceleratorState().mixed_precision),
                torch_threads=torch.get_num_threads(),
                accelerate_debug=os.environ.get("ACCELERATE_DEBUG_MODE"),
                dynamo_mode=os.environ.get("ACCELERATE_DYNAMO_MODE"),
                cwd=os.getcwd(),
            )

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            mark = os.environ.get("WBSWEEP_TEST_KILL_ONCE")
            if mark and _rank() == 1 and not os.path.exists(mark):
                Path(mark).touch()
                os.kill(os.getpid(), signal.SIGKILL)
            delay = float(os.environ.get("WBSWEEP_TEST_SLEEP", "0") or 0)
            unless = os.environ.get("WBSWEEP_TEST_SLEEP_UNLESS")
            if delay > 0 and not (unless and os.path.exists(unless)):
                _record("step", step=state.global_step)
                time.sleep(delay)

    return {"callbacks": [RecordRank()]}
