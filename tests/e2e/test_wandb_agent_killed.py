"""A SIGKILLed ``wandb agent`` leaves no trial behind, and its run is handed out again.

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
    start_agent,
    wait_for,
    wait_for_ranks_to_train,
    wbsweep,
)
from wandb_double import WandbDouble

pytestmark = pytest.mark.slow


def test_a_sigkilled_wandb_agent_leaves_no_launcher_or_rank(
    wandb_double: WandbDouble, tmp_path: Path
) -> None:
    record = tmp_path / "records"
    record.mkdir()
    created = wbsweep(
        "create", str(TEST_SWEEPS / "record_ranks.py"), "--backend", "wandb",
        "--project", "proj", "--json", "--n-trials", "1",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    path = json.loads(created.stdout)["sweep_id"]
    # Cold: the real `wandb agent` that a SIGKILL leaves a launcher of.
    agent = start_agent(
        path, record, "--processes-per-trial", "2", "--cold", WBSWEEP_TEST_SLEEP="1"
    )
    try:
        wait_for_ranks_to_train(record, 2)
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
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=60)
    assert processes_mentioning(str(record)) == []
