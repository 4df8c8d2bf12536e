"""Transformers' own in-process search on the benchmark's task, for comparison.

``python scripts/bench/optuna_search.py N`` runs ``Trainer.hyperparameter_search
(backend="optuna", n_trials=N)`` over ``timed_sweep.py``'s model, arguments,
datasets and space, with its clock, in this one process.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any


def main() -> None:
    from transformers import Trainer

    spec = importlib.util.spec_from_file_location(
        "wbsweep_bench_timed", Path(__file__).with_name("timed_sweep.py")
    )
    assert spec is not None and spec.loader is not None
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    train, evaluation = sweep.datasets()

    def model_init(trial: Any) -> Any:  # Transformers passes Optuna's trial: its params
        return sweep.model_init(dict(trial.params) if trial is not None else None)

    trainer = Trainer(
        model_init=model_init,
        args=sweep.training_args(),
        train_dataset=train,
        eval_dataset=evaluation,
        callbacks=[sweep.clock()],
    )
    trainer.hyperparameter_search(
        hp_space=sweep.hp_space, backend="optuna", n_trials=int(sys.argv[1]), direction="minimize"
    )


if __name__ == "__main__":
    main()
