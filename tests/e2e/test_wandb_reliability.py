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

pytestmark = pytest.mark.slow


def steps_of(record: Path, pids: set[int] | None = None) -> list[int]:
    return [
        r["step"]
        for r in rank_records(record)
        if r["event"] == "step" and (pids is None or r["pid"] in pids)
    ]


def history_steps(wandb_double: WandbDouble, run_id: str) -> list[int]:
    return [row["_step"] for row in wandb_double.run(run_id)["history"]]


def test_a_preempted_wandb_run_is_requeued_and_resumes_from_its_checkpoint(
    wandb_double: WandbDouble, tmp_path: Path
) -> None:
    record = tmp_path / "records"
    record.mkdir()
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
    again = wbsweep(
        "agent", path, WBSWEEP_TEST_RECORD_DIR=str(record), WBSWEEP_TEST_SLEEP="0.01", timeout=300
    )
    assert again.returncode == 0, again.stdout + again.stderr
    (done,) = wandb_double.runs(sweep_id)
    assert (done["id"], done["state"]) == (run["id"], "finished")
    resumed = [r["pid"] for r in rank_records(record) if r["pid"] not in first_pids]
    assert min(steps_of(record, set(resumed))) == saved + 1  # global_step goes on
    after = history_steps(wandb_double, run["id"])
    assert after[: len(before)] == before and len(after) > len(before)
    assert after == sorted(after) and len(set(after)) == len(after)  # W&B history goes on
    assert wandb_double.sweep(sweep_id)["state"] == "FINISHED"


def test_a_wandb_run_whose_worker_dies_is_requeued_once_and_finishes(
    wandb_double: WandbDouble, tmp_path: Path
) -> None:
    record = tmp_path / "records"
    record.mkdir()
    fast = tmp_path / "fast"
    path = create_wandb("--n-trials", "2")
    sweep_id = path.split("/")[-1]
    agent = start_agent(
        path, record, "--cold",  # `wandb agent`, its launcher and its rank: killed below
        WBSWEEP_TEST_SLEEP="0.3", WBSWEEP_TEST_SLEEP_UNLESS=str(fast),
        WBSWEEP_HEARTBEAT_TIMEOUT="5",
    )  # fmt: skip
    try:
        wait_for(lambda: steps_of(record), 180, "the first trial to train")
        (victim,) = [r["id"] for r in wandb_double.runs(sweep_id)]
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
    runs = {r["id"]: r for r in wandb_double.runs(sweep_id)}
    assert len(runs) == 2  # run_cap holds: the crashed run ran again, under its own id
    assert {r["state"] for r in runs.values()} == {"finished"}
    assert runs[victim]["summary"].get("wbsweep/requeues") == 1, out
    steps = history_steps(wandb_double, victim)
    assert steps == sorted(steps) and len(set(steps)) == len(steps)

    shown = wbsweep("status", path, "--json")
    assert shown.returncode == 0, shown.stderr
    by_id = {r["id"]: r for r in json.loads(shown.stdout)["runs"]}
    assert by_id[victim]["requeues"] == 1 and by_id[victim]["state"] == "finished"
    table = wbsweep("status", path)
    assert "requeued after 1 crash" in table.stdout
    assert processes_mentioning(str(record)) == []
