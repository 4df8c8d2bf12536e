"""Retraining with the best run: the last step of the Transformers docs' search recipe.

``retrain`` builds ``TrainingArguments`` from the sweep file's base arguments
plus what ``hp_space`` returns for the best hyperparameters (replayed, as each
trial applied them: :func:`wbsweep.params.trial_params`), trains a fresh model
from ``model_init`` (on train+eval with ``full``), and saves it with what it
used: the model, the tokenizer/processor when the sweep file gives one,
``training_args.bin`` (Transformers' own record of the arguments) and
``wbsweep_best.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wbsweep.params import apply_params, training_fields, trial_params
from wbsweep.sweepfile import SweepFile
from wbsweep.training import ModelInit, datasets_of, trainer_kwargs_of

BEST_FILE = "wbsweep_best.json"


@dataclass(frozen=True)
class RetrainResult:
    """Where the final model went, what it was trained with, and its eval metrics."""

    output_dir: str
    hyperparameters: dict[str, Any]
    metrics: dict[str, float]


def split_params(hyperparameters: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(TrainingArguments overrides, model params for model_init)``."""
    fields = training_fields()
    args = {k: v for k, v in hyperparameters.items() if k in fields}
    model = {k: v for k, v in hyperparameters.items() if k not in fields}
    return args, model


def best_overrides(
    sweep: SweepFile | None, hyperparameters: Mapping[str, Any]
) -> tuple[list[str], dict[str, Any]]:
    """The best run as its trial applied it: ``TrainingArguments`` tokens and ``model_init``'s
    params, with ``hp_space`` replayed (derived values, its branch only) when ``sweep`` is given.
    """
    if sweep is None:
        return args_overrides(hyperparameters), split_params(hyperparameters)[1]
    applied = trial_params(sweep.hp_space, hyperparameters)
    fields = training_fields()
    model = {k: v for k, v in applied.model.items() if k not in fields}
    return args_overrides(applied.arguments), model


def args_overrides(hyperparameters: Mapping[str, Any]) -> list[str]:
    """The ``TrainingArguments`` overrides as command-line tokens (``HfArgumentParser`` style).

    >>> args_overrides({"learning_rate": 3e-4, "per_device_train_batch_size": 16})
    ['--learning_rate', '0.0003', '--per_device_train_batch_size', '16']
    """
    args, _ = split_params(hyperparameters)
    tokens: list[str] = []
    for name, value in args.items():
        tokens += [f"--{name}", json.dumps(value) if isinstance(value, bool) else str(value)]
    return tokens


def retrain(
    sweep: SweepFile,
    best: Any,
    *,
    full: bool = False,
    output_dir: str | os.PathLike[str] | None = None,
    sweep_id: str | None = None,
) -> RetrainResult:
    """Train and save the final model with ``best.hyperparameters``.

    Args:
        sweep: The loaded sweep file.
        best: A ``BestRun`` (``run_id``, ``objective``, ``hyperparameters``).
        full: Train on train+eval (then nothing is held out to evaluate).
        output_dir: Where to save [default: base ``output_dir``/``best-<run id>``].
        sweep_id: Recorded beside the model so it can be traced to its sweep.
    """
    from transformers import Trainer

    hyperparameters = dict(best.hyperparameters)
    base = sweep.training_args()
    target = str(output_dir or Path(base.output_dir) / f"best-{best.run_id}")
    applied = trial_params(sweep.hp_space, hyperparameters)
    args = apply_params(base, applied.arguments)
    args = _with_output_dir(args, target)
    train_dataset, eval_dataset = datasets_of(sweep)
    if full:
        train_dataset = _concatenate(train_dataset, eval_dataset)
    model = ModelInit(sweep.model_init, applied.model)()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=None if full else eval_dataset,
        **trainer_kwargs_of(sweep),
    )
    trainer.train()
    metrics = {} if full else {k: float(v) for k, v in trainer.evaluate().items()}
    trainer.save_model(target)
    if trainer.is_world_process_zero():
        record = {
            "sweep_id": sweep_id,
            "run_id": best.run_id,
            "objective": best.objective,
            "hyperparameters": hyperparameters,
            "full": full,
            "metrics": metrics,
        }
        Path(target, BEST_FILE).write_text(json.dumps(record, indent=2))
    return RetrainResult(target, hyperparameters, metrics)


def _with_output_dir(args: Any, output_dir: str) -> Any:
    import dataclasses

    return dataclasses.replace(args, output_dir=output_dir)


def _concatenate(train: Any, extra: Any) -> Any:
    if extra is None:
        return train
    try:
        from datasets import Dataset, concatenate_datasets

        if isinstance(train, Dataset) and isinstance(extra, Dataset):
            return concatenate_datasets([train, extra])
    except ImportError:
        pass
    from torch.utils.data import ConcatDataset

    return ConcatDataset([train, extra])
