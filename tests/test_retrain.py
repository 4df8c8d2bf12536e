"""`wbsweep best --args` and `wbsweep retrain`: the final model carries the best hyperparameters."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from helpers import SWEEPS, create, wbsweep

from wbsweep.backends.local import LocalBackend


def sweep_with_results(objectives: list[float]) -> tuple[str, list[dict]]:
    """A tiny.py sweep whose runs finished with ``objectives`` (no training needed)."""
    sweep_id = create(SWEEPS / "tiny.py", "--n-trials", str(len(objectives)))
    store = LocalBackend()
    runs = []
    for objective in objectives:
        run = store.claim_next(sweep_id, "test")
        assert run is not None
        store.record_result(run.id, objective, {"eval_loss": objective})
        store.finish_run(run.id, exit_code=0)
        runs.append({"id": run.id, "params": run.params, "objective": objective})
    return sweep_id, runs


def test_best_args_prints_trainingarguments_overrides() -> None:
    sweep_id, runs = sweep_with_results([0.5, 0.2, 0.9])
    best = runs[1]
    result = wbsweep("best", sweep_id, "--args")
    assert result.returncode == 0, result.stderr
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


@pytest.mark.parametrize("full", [False, True], ids=["holdout", "full"])
def test_retrain_saves_a_model_with_the_best_hyperparameters(tmp_path: Path, full: bool) -> None:
    sweep_id, runs = sweep_with_results([0.4, 0.1])
    best = runs[1]
    out = tmp_path / "final"
    args = ["retrain", sweep_id, "--output-dir", str(out)] + (["--full"] if full else [])
    result = wbsweep(*args, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(out) in result.stdout

    saved_args = torch.load(out / "training_args.bin", weights_only=False)
    assert saved_args.learning_rate == pytest.approx(best["params"]["learning_rate"])
    assert saved_args.per_device_train_batch_size == best["params"]["per_device_train_batch_size"]
    record = json.loads((out / "wbsweep_best.json").read_text())
    assert record["run_id"] == best["id"] and record["sweep_id"] == sweep_id
    assert record["hyperparameters"] == best["params"]
    assert record["full"] is full
    assert ("eval_loss" in record["metrics"]) is not full

    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out)
    # The model param reached model_init too.
    assert model.config.hidden_dropout_prob == pytest.approx(best["params"]["hidden_dropout_prob"])


def test_retrain_without_a_finished_run_is_a_clear_error() -> None:
    sweep_id = create(SWEEPS / "tiny.py")
    result = wbsweep("retrain", sweep_id)
    assert result.returncode == 5
    assert "no finished run" in result.stderr and "Traceback" not in result.stderr
