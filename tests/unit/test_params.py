"""Trial params typed into ``TrainingArguments`` (``wbsweep.params``)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from transformers import TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SchedulerType
from transformers.training_args import OptimizerNames

from wbsweep.errors import TrialError
from wbsweep.params import apply_params, trial_params


@pytest.fixture
def base() -> TrainingArguments:
    return TrainingArguments(output_dir="out", report_to="none")


# -- params into TrainingArguments ----------------------------------------------------


def test_params_are_typed_as_their_fields(base: TrainingArguments) -> None:
    args = apply_params(
        base,
        {
            "per_device_train_batch_size": 16.0,  # W&B sends numbers as floats
            "learning_rate": 1,
            "seed": "7",
            "fp16": "false",
            "eval_steps": 50,  # float | None
            "hub_model_id": 12,  # str | None
            "lr_scheduler_type": "cosine",
            "optim": "adamw_torch",
            "eval_strategy": "steps",
        },
    )
    assert args.per_device_train_batch_size == 16
    assert type(args.per_device_train_batch_size) is int
    assert args.learning_rate == 1.0 and type(args.learning_rate) is float
    assert args.seed == 7 and args.fp16 is False
    assert args.eval_steps == 50.0 and args.hub_model_id == "12"
    assert args.lr_scheduler_type is SchedulerType.COSINE
    assert args.optim is OptimizerNames.ADAMW_TORCH
    assert args.eval_strategy is IntervalStrategy.STEPS


def test_model_params_leave_args_alone_and_base_is_unchanged(base: TrainingArguments) -> None:
    args = apply_params(base, {"hidden_dropout_prob": 0.3, "learning_rate": 0.01})
    assert not hasattr(args, "hidden_dropout_prob")
    assert args.learning_rate == 0.01 and base.learning_rate == 5e-5


def test_output_dir_gets_the_run_dir(base: TrainingArguments) -> None:
    args = apply_params(base, {}, run_dir="run-abc")
    assert args.output_dir == os.path.join("out", "run-abc")


def test_none_is_allowed_only_for_optional_fields(base: TrainingArguments) -> None:
    assert apply_params(base, {"eval_steps": None}).eval_steps is None
    with pytest.raises(TrialError, match="learning_rate"):
        apply_params(base, {"learning_rate": None})


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"per_device_train_batch_size": 16.5}, "per_device_train_batch_size=16.5"),
        ({"per_device_train_batch_size": True}, "per_device_train_batch_size=True"),
        ({"learning_rate": "fast"}, "learning_rate='fast'"),
        ({"fp16": "maybe"}, "fp16='maybe'"),
        ({"lr_scheduler_type": "cosine_typo"}, "cosine_typo"),
    ],
)
def test_values_that_do_not_fit_name_the_param(
    base: TrainingArguments, params: dict[str, Any], named: str
) -> None:
    with pytest.raises(TrialError, match="param ") as info:
        apply_params(base, params)
    assert named in str(info.value) and "\n" not in str(info.value)


def test_enum_error_lists_the_choices(base: TrainingArguments) -> None:
    with pytest.raises(TrialError, match="linear"):
        apply_params(base, {"lr_scheduler_type": "cosine_typo"})


def test_combinations_trainingarguments_rejects_become_trial_errors(
    base: TrainingArguments,
) -> None:
    # TrainingArguments' own validation still runs on the trial's copy.
    with pytest.raises(TrialError, match="rejected"):
        apply_params(base, {"eval_strategy": "steps", "eval_steps": 0, "logging_steps": 0})


def test_a_sweep_param_hp_space_never_suggests_applies_by_name() -> None:
    def hp_space(trial: Any) -> dict[str, Any]:
        optim = trial.suggest_categorical("optim", ["sgd", "adamw_torch"])
        beta = {"adam_beta1": trial.suggest_float("adam_beta1", 0.8, 0.9)} if optim != "sgd" else {}
        return {"optim": optim, **beta}

    # A sweep made from another space (a W&B YAML) with a param of its own.
    sampled = {"optim": "sgd", "adam_beta1": 0.85, "lr_scheduler_type": "cosine"}
    applied = trial_params(hp_space, sampled)
    assert applied.arguments == {"lr_scheduler_type": "cosine", "optim": "sgd"}
    assert applied.unused == ("adam_beta1",)
    args = apply_params(TrainingArguments(output_dir="out"), applied.arguments)
    assert (args.optim, args.lr_scheduler_type, args.adam_beta1) == ("sgd", "cosine", 0.9)
