"""Preemption: a scheduler's SIGTERM partway through training, then the rerun resumes.

A real 2-rank trial gets SIGTERM through ``wbsweep agent`` (as SLURM or Kubernetes send it to the
node's job); both ranks save one checkpoint at the same step and leave, the run is ``preempted``,
and the next agent resumes that run, under the same id, from that step. The trials run in a
warm group (the default), so this is also what a preempted warm trial does; SIGTERM to the agent
leaves no rank running (what ``test_sweep_e2e`` checks for SIGKILL and Ctrl-C).
"""

from __future__ import annotations

import signal
from pathlib import Path

import psutil
import pytest
from helpers import (
    TEST_SWEEPS,
    invoke_create,
    invoke_status,
    processes_mentioning,
    rank_records,
    start_agent,
    wait_for,
    wbsweep,
)

from wbsweep.errors import EXIT_TERMINATED

pytestmark = pytest.mark.slow


def test_a_preempted_trial_checkpoints_and_its_rerun_resumes_from_there(tmp_path: Path) -> None:
    record = tmp_path / "records"
    record.mkdir()
    sweep_id = invoke_create(TEST_SWEEPS / "record_ranks.py", "--n-trials", "1")
    agent = start_agent(sweep_id, record, "--processes-per-trial", "2", WBSWEEP_TEST_SLEEP="0.3")
    try:
        wait_for(
            lambda: max((r.get("step", 0) for r in rank_records(record)), default=0) >= 3,
            120,
            "a few training steps",
        )
        # Both ranks are training when the notice comes.
        assert len({r["pid"] for r in rank_records(record) if r["event"] == "step"}) == 2
        agent.send_signal(signal.SIGTERM)
        out, _ = agent.communicate(timeout=90)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == EXIT_TERMINATED, out
    # One worker of 2 ranks: each rank gets half the node's cores, not all of them.
    cores = psutil.cpu_count(logical=False) or 1
    begins = [r for r in rank_records(record) if r["event"] == "train_begin"]
    assert [r["torch_threads"] for r in begins] == [max(1, cores // 2)] * 2
    wait_for(lambda: not processes_mentioning(str(record)), 60, "every process to end")
    (run,) = invoke_status(sweep_id)["runs"]
    assert run["state"] == "preempted", run
    run_dir = tmp_path / "outputs" / "record_ranks" / f"run-{run['id']}"
    (checkpoint,) = run_dir.glob("checkpoint-*")
    saved = int(checkpoint.name.split("-")[1])
    first_pids = {r["pid"] for r in rank_records(record)}

    # Another agent (any node that sees the output dir) takes the preempted run first.
    again = wbsweep(
        "agent", sweep_id, "--processes-per-trial", "2",
        WBSWEEP_TEST_RECORD_DIR=str(record), WBSWEEP_TEST_SLEEP="0.01", timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    (done,) = invoke_status(sweep_id)["runs"]
    assert (done["id"], done["state"]) == (run["id"], "finished")
    assert done["objective"] is not None
    resumed = [r for r in rank_records(record) if r["pid"] not in first_pids]
    steps = [r["step"] for r in resumed if r["event"] == "step"]
    assert sorted({r["rank"] for r in resumed if r["event"] == "step"}) == [0, 1]
    assert min(steps) == saved + 1  # global_step goes on from the checkpoint, on both ranks
    assert invoke_status(sweep_id)["state"] == "FINISHED"
