"""A real sweep on the local backend: CLI, agent, workers, 2-rank accelerate trials, best.

Slow: each trial is a real `accelerate launch` of 2 gloo ranks on CPU. The sweep is created
and read back in this process (the same CLI, ``invoke_create`` / ``invoke_status``); the agent
and ``best`` run as the console script.
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
    invoke_create,
    invoke_status,
    processes_mentioning,
    rank_records,
    start_agent,
    wait_for,
    wait_for_ranks_to_train,
    wbsweep,
)

from wbsweep.errors import EXIT_INTERRUPTED

pytestmark = pytest.mark.slow


def _trial_is_training(record: Path, trial: int, ranks: int) -> bool:
    """Whether ``ranks`` ranks took a step after their ``model_init`` of the ``trial``-th trial.

    One warm group runs the trials, so each rank's record file holds them in order.
    """
    stepping = 0
    for path in record.glob("rank*.jsonl"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        inits = [n for n, r in enumerate(lines) if r["event"] == "model_init"]
        if len(inits) >= trial and any(r["event"] == "step" for r in lines[inits[trial - 1] :]):
            stepping += 1
    return stepping >= ranks


def test_two_rank_trials_train_alike_best_picks_the_best_and_ctrl_c_stops_a_trial(
    tmp_path: Path,
) -> None:
    """A user's sweep of 2-rank trials from start to Ctrl-C, on one warm worker.

    The first two trials finish: both ranks of each train with its params, and
    ``best`` picks the better. The third is training when the user presses Ctrl-C:
    the run is stopped and no rank is left running.
    """
    record, fast = tmp_path / "records", tmp_path / "fast"
    record.mkdir()
    fast.touch()  # the first trial's steps do not sleep; from the second on they do
    sweep_id = invoke_create(
        TEST_SWEEPS / "record_ranks.py", "--method", "random", "--n-trials", "3",
        "--processes-per-trial", "2",
    )  # fmt: skip
    # No shape flag on the agent: it runs the shape the sweep recorded.
    agent = start_agent(
        sweep_id, record, WBSWEEP_TEST_SLEEP="0.3", WBSWEEP_TEST_SLEEP_UNLESS=str(fast)
    )
    try:
        inits = lambda: [r for r in rank_records(record) if r["event"] == "model_init"]  # noqa: E731
        wait_for(lambda: len(inits()) >= 3, 300, "the second trial to start")
        fast.unlink()  # so the third trial is still training when Ctrl-C comes
        wait_for(lambda: _trial_is_training(record, 3, ranks=2), 300, "the third trial to train")
        wait_for(
            lambda: invoke_status(sweep_id)["runs"][2]["started_at"],
            30,
            "the third run's record of its first training step",
        )
        agent.send_signal(signal.SIGINT)
        out, _ = agent.communicate(timeout=90)
        wait_for(lambda: not processes_mentioning(str(record)), 60, "every process to end")
        wait_for(
            lambda: invoke_status(sweep_id)["runs"][2]["state"] != "running", 30, "the run to close"
        )
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == EXIT_INTERRUPTED, out
    swept = invoke_status(sweep_id)
    runs = swept["runs"]
    assert [r["state"] for r in runs] == ["finished", "finished", "stopped"], out
    assert processes_mentioning(str(record)) == []
    finished = runs[:2]
    for run in finished:
        assert math.isfinite(run["objective"])
        assert run["objective"] == pytest.approx(run["metrics"]["eval_loss"])
        assert run["claimed_at"] <= run["started_at"] <= run["finished_at"]
        assert Path("outputs/record_ranks", f"run-{run['id']}").is_dir()
    for run in runs:
        # Warm workers are the default: one process group ran the worker's trials.
        assert run["ran_as"] == {"ranks": 2, "mixed_precision": "no", "override": False,
                                 "warm": True}  # fmt: skip

    # Both ranks of every trial trained with that run's params and nothing else.
    begins = [r for r in rank_records(record) if r["event"] == "train_begin"]
    assert len(begins) == 6
    for run in runs:
        mine = [b for b in begins if b["output_dir"].endswith(f"run-{run['id']}")]
        assert sorted(b["process_index"] for b in mine) == [0, 1]
        assert {b["world_size"] for b in mine} == {2}
        for b in mine:
            assert b["learning_rate"] == pytest.approx(run["params"]["learning_rate"])
            assert b["per_device_train_batch_size"] == run["params"]["per_device_train_batch_size"]
            assert b["hidden_dropout_prob"] == pytest.approx(run["params"]["hidden_dropout_prob"])
        assert sum(1 for i in inits() if i["params"] == run["params"]) >= 2

    result = wbsweep("best", sweep_id, "--json")
    assert result.returncode == 0, result.stderr
    best = json.loads(result.stdout)
    winner = min(finished, key=lambda r: r["objective"])
    assert best["run_id"] == winner["id"]
    assert best["objective"] == pytest.approx(winner["objective"])
    assert best["hyperparameters"] == winner["params"]
    assert set(best) == {"run_id", "objective", "hyperparameters", "run_summary"}

    # Each trial's rank 0 left an offline W&B run, ready for `wandb sync`.
    offline = list(Path(os.environ["WANDB_DIR"], "wandb").glob("offline-run-*"))
    assert {path.name.rsplit("-", 1)[-1] for path in offline} == {r["id"] for r in runs}


# A SIGKILLed agent's workers get SIGTERM from the kernel: the run is preempted, to run again.
# (SIGTERM to the agent, a scheduler taking the node back, is ``test_preemption.py``: the run
# preempted, no process left, and its rerun resuming; Ctrl-C ends the test above.)
def test_a_sigkilled_agent_leaves_no_rank_running(tmp_path: Path) -> None:
    record = tmp_path / "records"
    record.mkdir()
    sweep_id = invoke_create(TEST_SWEEPS / "record_ranks.py", "--n-trials", "1")
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
            lambda: any(r["started_at"] for r in invoke_status(sweep_id)["runs"]),
            120,
            "the trial's first training step",
        )
        assert len(wait_for_ranks_to_train(record, 2, timeout=30)) == 2  # both ranks train
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=90)
        wait_for(lambda: not processes_mentioning(str(record)), 60, "every process to end")
        wait_for(
            lambda: invoke_status(sweep_id)["runs"][0]["state"] != "running", 30, "the run to close"
        )
    finally:
        if agent.poll() is None:
            agent.kill()
    (run,) = invoke_status(sweep_id)["runs"]
    assert run["state"] == "preempted"
    assert processes_mentioning(str(record)) == []
