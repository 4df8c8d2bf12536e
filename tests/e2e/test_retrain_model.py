"""`wbsweep retrain`: the final model carries the best hyperparameters.

Slow: each test trains the model, through the ``wbsweep`` console script.
``wbsweep best --args`` and retrain's errors are in ``tests/unit/test_retrain.py``.

The retrain runs on one torch thread (``OMP_NUM_THREADS=1``, as a user may set it):
what is checked is what it saves, and on a small shared machine more threads
of a tiny model only spin.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import sweep_with_results, wbsweep

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("full", [False, True], ids=["holdout", "full"])
def test_retrain_saves_a_model_with_the_best_hyperparameters(tmp_path: Path, full: bool) -> None:
    sweep_id, runs = sweep_with_results([0.4, 0.1])
    best = runs[1]
    out = tmp_path / "final"
    args = ["retrain", sweep_id, "--output-dir", str(out)] + (["--full"] if full else [])
    result = wbsweep(*args, timeout=300, OMP_NUM_THREADS="1")
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
