"""The Trainer glue of a trial: the model bound to its params, the objective."""

from __future__ import annotations

import math
from typing import Any

import pytest
from helpers import REPO

from wbsweep.errors import TrialError
from wbsweep.sweepfile import load_sweep_file
from wbsweep.training import ModelInit, objective_of

TINY = REPO / "sweeps" / "tiny.py"


# -- pieces of the lifecycle --------------------------------------------------------------


def test_model_init_gets_the_params_once_per_trial() -> None:
    calls: list[dict[str, Any]] = []

    def model_init(params: dict[str, Any]) -> object:
        calls.append(params)
        return object()

    bound = ModelInit(model_init, {"hidden_dropout_prob": 0.2})
    first, second = bound(), bound()  # Trainer.__init__, then Trainer.train
    assert first is second and calls == [{"hidden_dropout_prob": 0.2}]
    assert bound() is not first  # a later train() would get a fresh model


@pytest.mark.parametrize("value", [math.nan, math.inf, "n/a"])
def test_objective_must_be_a_finite_number(value: Any) -> None:
    sweep = load_sweep_file(TINY)
    sweep = type(sweep)(**{**sweep.__dict__, "compute_objective": lambda metrics: value})
    with pytest.raises(TrialError, match="compute_objective"):
        objective_of(sweep.compute_objective, {"eval_loss": 0.5})


def test_default_objective_is_eval_loss() -> None:
    sweep = load_sweep_file(TINY)
    assert objective_of(sweep.compute_objective, {"eval_loss": 0.25, "epoch": 1.0}) == 0.25


def test_model_init_without_a_trial_argument_is_called_bare() -> None:
    bound = ModelInit(lambda: "model", {"x": 1})
    assert bound() == "model" and bound.calls == 1


def test_model_init_returning_none_is_a_trial_error() -> None:
    with pytest.raises(TrialError, match="model_init returned None"):
        ModelInit(lambda params: None, {})()
