"""`wbsweep best --args` and retrain's errors, in this process through click's ``CliRunner``.

Retraining a model is slow: ``tests/e2e/test_retrain_model.py``.
"""

from __future__ import annotations

import shlex

import pytest
from helpers import SWEEPS, invoke, invoke_create, sweep_with_results


def test_best_args_prints_trainingarguments_overrides() -> None:
    sweep_id, runs = sweep_with_results([0.5, 0.2, 0.9])
    best = runs[1]
    result = invoke("best", sweep_id, "--args")
    assert result.exit_code == 0, result.stderr
    tokens = shlex.split(result.stdout)
    assert tokens == [
        "--learning_rate", str(best["params"]["learning_rate"]),
        "--per_device_train_batch_size", str(best["params"]["per_device_train_batch_size"]),
    ]  # fmt: skip
    # The model param is not a TrainingArguments field: named apart, on stderr.
    assert "hidden_dropout_prob=" in result.stderr
    from transformers import HfArgumentParser, TrainingArguments

    (parsed,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", "x", *tokens]
    )
    assert parsed.learning_rate == pytest.approx(best["params"]["learning_rate"])


def test_retrain_without_a_finished_run_is_a_clear_error() -> None:
    sweep_id = invoke_create(SWEEPS / "tiny.py")
    result = invoke("retrain", sweep_id)
    assert result.exit_code == 5
    assert "no finished run" in result.stderr and "Traceback" not in result.stderr
