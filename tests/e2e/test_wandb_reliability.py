"""Preempted and crashed runs of a W&B sweep run again, under the same run id.

Real ``wbsweep agent``, real ``wandb agent``, real trials, against the W&B test double
(which models W&B's requeue of a run that called ``mark_preempting()``; see its
``_engine.requeue``). Faults are real signals to real processes.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from helpers import (
    create_wandb,
    preempt_after_steps,
    processes_mentioning,
    rank_records,
    start_agent,
    wait_for,
    wbsweep,
)
from wandb_double import WandbDouble

# Tiny models train on one torch thread here and in every rank (tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def steps_of(record: Path, pids: set[int] | None = None) -> list[int]:
    return [
        r["step"]
        for r in rank_records(record)
        if r["event"] == "step" and (pids is None or r["pid"] in pids)
    ]


def history_steps(wandb_double: WandbDouble, run_id: str) -> list[int]:
    return [row["_step"] for row in wandb_double.run(run_id)["history"]]


def test_a_preempted_wandb_run_resumes_from_its_checkpoint_and_when_its_worker_dies_too(
    wandb_double: WandbDouble, tmp_path: Path
) -> None:
    """One run of a W&B sweep, through a preemption and then the loss of its worker.

    Preempted (SIGTERM to a warm node's agent): the run checkpoints, is ``preempted`` on
    W&B and handed out again to the next node's agent, whose trial goes on from the
    checkpoint. There, the worker (``wandb agent``), its launcher and rank all die at once
    (a node lost, nobody left to tell W&B): the keeper of ``wbsweep agent`` requeues the run
    once, the restarted worker finishes it under the same id; the run's W&B history goes on
    in order throughout, and ``status`` says the run was requeued after a crash.
    """
    record = tmp_path / "records"
    record.mkdir()
    fast = tmp_path / "fast"
    path = create_wandb("--n-trials", "1")
    sweep_id = path.split("/")[-1]
    agent = start_agent(path, record, WBSWEEP_TEST_SLEEP="0.3")
    preempt_after_steps(agent, lambda: steps_of(record))  # the scheduler's notice to the node
    wait_for(lambda: not processes_mentioning(str(record)), 60, "every process to end")
    (run,) = wandb_double.runs(sweep_id)
    assert run["state"] == "preempted", run  # mark_preempting(), then a non-zero exit
    (checkpoint,) = (tmp_path / "outputs" / "record_ranks" / f"run-{run['id']}").glob(
        "checkpoint-*"
    )
    saved = int(checkpoint.name.split("-")[1])
    before = history_steps(wandb_double, run["id"])
    first_pids = {r["pid"] for r in rank_records(record)}

    # A node's agent, later: W&B hands it the same run, which goes on from the checkpoint.
    agent = start_agent(
        path, record, "--cold",  # `wandb agent`, its launcher and its rank: killed below
        WBSWEEP_TEST_SLEEP="1", WBSWEEP_TEST_SLEEP_UNLESS=str(fast),
        WBSWEEP_HEARTBEAT_TIMEOUT="5",
    )  # fmt: skip
    try:

        def resumed() -> set[int]:
            return {r["pid"] for r in rank_records(record) if r["event"] == "step"} - first_pids

        wait_for(resumed, 180, "the rerun to train")
        assert min(steps_of(record, resumed())) == saved + 1  # global_step goes on
        assert [r["id"] for r in wandb_double.runs(sweep_id)] == [run["id"]]
        # The worker (`wandb agent`), its trial's launcher and rank, all gone at once, as
        # when a node is lost: nobody is left to tell W&B. (This node's `wbsweep agent`
        # and its keeper stay, standing in for the other nodes of the sweep.)
        doomed = [
            pid
            for pid, cmd in processes_mentioning(str(record))
            if (" agent " in f" {cmd} " and "wandb" in cmd.split()[1])
            or "accelerate launch" in cmd
            or "wbsweep.trial" in cmd
        ]
        assert len(doomed) == 3, processes_mentioning(str(record))
        for pid in doomed:
            os.kill(pid, signal.SIGKILL)
        fast.touch()
        out, _ = agent.communicate(timeout=400)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, out
    assert "worker 0 was killed (SIGKILL)" in out
    # One run, under its own id, all along (the sweep's run_cap is 1): finished now.
    (done,) = wandb_double.runs(sweep_id)
    assert (done["id"], done["state"]) == (run["id"], "finished")
    assert done["summary"].get("wbsweep/requeues") == 1, out
    after = history_steps(wandb_double, run["id"])
    assert after[: len(before)] == before and len(after) > len(before)
    assert after == sorted(after) and len(set(after)) == len(after)  # W&B history goes on
    assert wandb_double.sweep(sweep_id)["state"] == "FINISHED"

    shown = wbsweep("status", path, "--json")
    assert shown.returncode == 0, shown.stderr
    (mine,) = json.loads(shown.stdout)["runs"]
    assert (mine["id"], mine["requeues"], mine["state"]) == (run["id"], 1, "finished")
    table = wbsweep("status", path)
    assert "requeued after 1 crash" in table.stdout
    assert processes_mentioning(str(record)) == []
