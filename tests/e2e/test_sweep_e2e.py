"""A real sweep on the local backend: CLI, agent, workers, 2-rank accelerate trials, best.

Slow: each trial is a real `accelerate launch` of 2 gloo ranks on CPU.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import (
    TEST_SWEEPS,
    WBSWEEP,
    create,
    processes_mentioning,
    rank_records,
    status,
    wait_for,
    wbsweep,
)

pytestmark = pytest.mark.slow


def test_two_rank_trials_train_alike_and_best_picks_the_best(tmp_path: Path) -> None:
    record = tmp_path / "records"
    record.mkdir()
    sweep_id = create(
        TEST_SWEEPS / "record_ranks.py", "--method", "random", "--n-trials", "3",
        "--processes-per-trial", "2",
    )  # fmt: skip
    # No shape flag on the agent: it runs the shape the sweep recorded.
    result = wbsweep(
        "agent", sweep_id, "--workers", "2", WBSWEEP_TEST_RECORD_DIR=str(record), timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    swept = status(sweep_id)
    runs = swept["runs"]
    assert len(runs) == 3
    assert [r["state"] for r in runs] == ["finished"] * 3, result.stdout
    for run in runs:
        assert math.isfinite(run["objective"])
        assert run["objective"] == pytest.approx(run["metrics"]["eval_loss"])
        assert run["claimed_at"] <= run["started_at"] <= run["finished_at"]
        assert Path("outputs/record_ranks", f"run-{run['id']}").is_dir()
        # Warm workers are the default: one process group per worker ran its trials.
        assert run["ran_as"] == {"ranks": 2, "mixed_precision": "no", "override": False,
                                 "warm": True}  # fmt: skip

    # Both ranks of every trial trained with that run's params and nothing else.
    begins = [r for r in rank_records(record) if r["event"] == "train_begin"]
    inits = [r for r in rank_records(record) if r["event"] == "model_init"]
    assert len(begins) == 6
    for run in runs:
        mine = [b for b in begins if b["output_dir"].endswith(f"run-{run['id']}")]
        assert sorted(b["process_index"] for b in mine) == [0, 1]
        assert {b["world_size"] for b in mine} == {2}
        for b in mine:
            assert b["learning_rate"] == pytest.approx(run["params"]["learning_rate"])
            assert b["per_device_train_batch_size"] == run["params"]["per_device_train_batch_size"]
            assert b["hidden_dropout_prob"] == pytest.approx(run["params"]["hidden_dropout_prob"])
        assert sum(1 for i in inits if i["params"] == run["params"]) >= 2

    result = wbsweep("best", sweep_id, "--json")
    assert result.returncode == 0, result.stderr
    best = json.loads(result.stdout)
    winner = min(runs, key=lambda r: r["objective"])
    assert best["run_id"] == winner["id"]
    assert best["objective"] == pytest.approx(winner["objective"])
    assert best["hyperparameters"] == winner["params"]
    assert set(best) == {"run_id", "objective", "hyperparameters", "run_summary"}

    # Each trial's rank 0 left an offline W&B run, ready for `wandb sync`.
    offline = list(Path(os.environ["WANDB_DIR"], "wandb").glob("offline-run-*"))
    assert len(offline) == 3


# SIGTERM is a scheduler taking the node back (and a SIGKILLed agent's workers get SIGTERM from
# the kernel): the run is preempted, to run again. Ctrl-C means stop.
@pytest.mark.parametrize(
    ("sig", "state"),
    [(signal.SIGTERM, "preempted"), (signal.SIGKILL, "preempted"), (signal.SIGINT, "stopped")],
    ids=["sigterm", "sigkill", "sigint"],
)
def test_stopping_the_agent_leaves_no_rank_running(tmp_path: Path, sig: int, state: str) -> None:
    record = tmp_path / "records"
    record.mkdir()
    sweep_id = create(TEST_SWEEPS / "record_ranks.py", "--n-trials", "1")
    env = {**os.environ, "WBSWEEP_TEST_RECORD_DIR": str(record), "WBSWEEP_TEST_SLEEP": "0.3"}
    agent = subprocess.Popen(
        [WBSWEEP, "agent", sweep_id, "--processes-per-trial", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            lambda: any(r["started_at"] for r in status(sweep_id)["runs"]),
            120,
            "the trial's first training step",
        )
        ranks = {r["pid"] for r in rank_records(record) if r["event"] == "step"}
        assert len(ranks) == 2
        agent.send_signal(sig)
        agent.wait(timeout=90)
        wait_for(lambda: not processes_mentioning(str(record)), 60, "every process to end")
        wait_for(lambda: status(sweep_id)["runs"][0]["state"] != "running", 30, "the run to close")
    finally:
        if agent.poll() is None:
            agent.kill()
    (run,) = status(sweep_id)["runs"]
    assert run["state"] == state
    assert processes_mentioning(str(record)) == []
