"""A SIGKILLed ``wandb agent`` leaves no trial behind, and its run is handed out again;
a stop from the server ends every rank of a running 2-rank trial.

``wandb agent`` starts each run's command from a thread, with no parent-death signal, so the
trial's launcher would outlive it; every rank of a wbsweep trial watches its launcher and ends
it once it is orphaned. Real ``wandb agent``, real 2-rank trial, against the W&B test double.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from helpers import (
    TEST_SWEEPS,
    processes_mentioning,
    rank_records,
    start_agent,
    wait_for,
    wait_for_ranks_to_train,
    wbsweep,
)
from wandb_double import WandbDouble

# Tiny models train on one torch thread here and in every rank (tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def test_a_sigkilled_wandb_agent_leaves_no_launcher_or_rank_then_a_server_stop_ends_the_rerun(
    wandb_double: WandbDouble, tmp_path: Path
) -> None:
    """Two faults to one cold 2-rank trial on W&B, one after the other.

    A SIGKILLed ``wandb agent``: its launcher and both ranks end within seconds and the run
    is handed out again. Then a stop from the server to that rerun, while both its ranks
    train: every rank ends, the run is killed (W&B) and stopped (``wbsweep status``).
    """
    record = tmp_path / "records"
    record.mkdir()
    created = wbsweep(
        "create", str(TEST_SWEEPS / "record_ranks.py"), "--backend", "wandb",
        "--project", "proj", "--json", "--n-trials", "1",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    path = json.loads(created.stdout)["sweep_id"]
    # Cold: the real `wandb agent` that a SIGKILL leaves a launcher of. A step every 2 s, so
    # the rerun still trains when the stop lands (batches of 32 on 2 ranks: 16 steps).
    agent = start_agent(
        path, record, "--processes-per-trial", "2", "--cold", WBSWEEP_TEST_SLEEP="2"
    )
    try:
        first_pids = wait_for_ranks_to_train(record, 2)
        (wandb_agent,) = [
            pid
            for pid, cmd in processes_mentioning(path)
            if " agent " in f" {cmd} " and "wandb" in cmd.split()[1]
        ]
        trial = {
            pid
            for pid, cmd in processes_mentioning(str(record))
            if "accelerate" in cmd or "wbsweep.trial" in cmd
        }
        assert len(trial) == 3, processes_mentioning(str(record))  # the launcher, 2 ranks

        def trial_processes() -> list[int]:
            return [pid for pid, cmd in processes_mentioning(str(record)) if "wbsweep.trial" in cmd]

        def alive() -> set[int]:
            return trial & {pid for pid, _ in processes_mentioning(str(record))}

        os.kill(wandb_agent, signal.SIGKILL)
        killed = time.monotonic()
        # Within seconds: the ranks notice at once, checkpoint at their next step and leave.
        # (Left alone, they would train on until a write to the dead agent's pipe failed.)
        wait_for(lambda: not alive(), 60, "the launcher and ranks to end")
        print(f"trial gone {time.monotonic() - killed:.1f} s after the agent's SIGKILL")
        assert time.monotonic() - killed < 20

        # The trial checkpointed and marked its run preempting: W&B hands the same run
        # out again, here to the worker that `wbsweep agent` started in place of the dead one.
        def handed_out() -> list[str]:
            return [c["run_id"] for _, c in wandb_double.commands if c["type"] == "run"]

        wait_for(lambda: len(handed_out()) >= 2, 90, "the run to be handed out again")
        first, again = handed_out()[:2]
        assert first == again

        # A stop from the server (what hyperband or the stop button sends) while both ranks
        # of the run's second trial train: every rank ends, the run is killed.
        def rerun_training() -> set[int]:
            return {
                r["pid"] for r in rank_records(record) if r["event"] == "step"
            } - first_pids  # fmt: skip

        wait_for(lambda: len(rerun_training()) == 2, 180, "both ranks of the rerun to train")
        assert len(trial_processes()) >= 2
        wandb_double.stop_run(again)
        wait_for(lambda: not trial_processes(), 90, "every rank of the rerun to end")
        wait_for(lambda: wandb_double.run(again)["state"] != "running", 60, "the run to end")
        agent.wait(timeout=120)  # the sweep has nothing left: the agent leaves by itself
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=60)
    assert wandb_double.run(again)["state"] == "killed"
    shown = wbsweep("status", path, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["runs"][0]["state"] == "stopped"
    assert processes_mentioning(str(record)) == []
