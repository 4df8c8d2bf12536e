"""BestRun selection: what `wbsweep best` and the library call return."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from transformers.trainer_utils import BestRun

from wbsweep.backends import base
from wbsweep.backends.base import RunEnd
from wbsweep.backends.local import LocalBackend
from wbsweep.best import best_run, select_best
from wbsweep.errors import NoBestRunError


def run(rid: str, state: str, objective: float | None) -> base.RunRecord:
    return base.RunRecord(rid, "s", state, {"lr": 0.1}, objective=objective)


def test_only_finished_finite_runs_compete() -> None:
    runs = [
        run("crashed", "crashed", -100.0),
        run("nan", "finished", math.nan),
        run("inf", "finished", -math.inf),
        run("none", "finished", None),
        run("good", "finished", 0.4),
        run("better", "finished", 0.2),
        run("stopped", "stopped", 0.0),
    ]
    assert select_best(runs, "minimize").id == "better"
    assert select_best(runs, "maximize").id == "good"


def test_ties_go_to_the_earlier_run() -> None:
    assert select_best([run("a", "finished", 1.0), run("b", "finished", 1.0)], "maximize").id == "a"


def test_no_candidate_is_a_clear_error() -> None:
    with pytest.raises(NoBestRunError, match="2 runs"):
        select_best([run("a", "failed", None), run("b", "crashed", 1.0)], "minimize")


def test_best_run_from_store_has_only_sweep_params(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "s.db")
    config = {
        "method": "grid",
        "metric": {"name": "accuracy", "goal": "maximize"},
        "parameters": {"a": {"values": [1, 2, 3]}},
    }
    sweep_id = store.create(config)
    while (r := store.claim_next(sweep_id, "w")) is not None:
        store.record_result(r.id, r.params["a"] / 10, {"eval_accuracy": r.params["a"] / 10})
        store.finish_run(r.id, RunEnd(0 if r.params["a"] != 3 else 1))
    best = best_run(store, sweep_id)
    assert isinstance(best, BestRun)
    assert best.hyperparameters == {"a": 2}
    assert best.objective == pytest.approx(0.2)
    assert best.run_summary["accuracy"] == pytest.approx(0.2)
    assert best.run_summary["eval_accuracy"] == pytest.approx(0.2)


def test_params_a_run_did_not_use_are_left_out_of_its_best_run() -> None:
    from types import SimpleNamespace

    from wbsweep.backends._wandb_records import RAN_AS_KEY, run_record
    from wbsweep.best import build_best_run

    sweep = base.SweepRecord(
        "e/p/s",
        {"metric": {"name": "loss", "goal": "minimize"}, "parameters": {"optim": {}, "beta": {}}},
        "RUNNING",
    )
    # As a W&B run records it: every sweep param in its config, the unused ones beside.
    wandb_run = SimpleNamespace(
        id="r1",
        state="finished",
        config={"optim": "sgd", "beta": 0.85, RAN_AS_KEY: {"ranks": 1, "unused_params": ["beta"]}},
        summary_metrics='{"loss": {"min": 0.2}}',
    )
    record = run_record(wandb_run, sweep)
    assert record.params == {"optim": "sgd", "beta": 0.85}
    assert record.unused_params == {"beta"}
    assert build_best_run(sweep, [record]).hyperparameters == {"optim": "sgd"}
