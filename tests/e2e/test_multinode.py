"""One trial across two nodes: two real `wbsweep agent`s on this machine, over loopback.

Node 0 takes each run from the local store, or from W&B (the test double) through
a real `wandb agent`; node 1 joins it, with no W&B credentials at all. Each node
runs 1 rank on CPU under its own real `accelerate launch`, and the two ranks form
one gloo process group of world size 2.

Each trial costs two launches (one per node), so each scenario runs as few as
its checks need: the local one goes through a failing trial, then a trial whose
node 1 is stopped and comes back; the W&B one through one trial.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from helpers import (
    TEST_SWEEPS,
    create,
    create_wandb,
    output_of,
    rank_records,
    start_agent,
    status,
    wait_for,
)
from wandb_double import WandbDouble

from wbsweep.errors import EXIT_TERMINATED
from wbsweep.slots import free_port

pytestmark = pytest.mark.slow

CPU = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
# Only node 0 talks to the sweep's backend: node 1 has no W&B key and no W&B server.
NO_WANDB = {"WANDB_API_KEY": "", "WANDB_BASE_URL": "http://127.0.0.1:9"}
RAN_AS = {"ranks": 2, "mixed_precision": "no", "override": False, "nodes": 2}


def group_args() -> list[str]:
    return ["--nodes", "2", "--main-host", "127.0.0.1", "--main-port", str(free_port())]


def began(record: Path, run_id: str) -> list[dict]:
    """The ``train_begin`` records of run ``run_id``'s ranks, every attempt."""
    return [
        r
        for r in rank_records(record)
        if r["event"] == "train_begin" and r["output_dir"].endswith(f"run-{run_id}")
    ]


def last_step(record: Path, rank: int) -> int:
    """The last training step ``rank`` recorded (0 before any)."""
    steps = [r["step"] for r in rank_records(record) if r["event"] == "step" and r["rank"] == rank]
    return max(steps, default=0)


def assert_one_group_with_the_runs_params(begins: list[dict], run: dict) -> None:
    """One rank per node, one process group of 2, both with the run's params."""
    assert sorted((r["process_index"], r["world_size"]) for r in begins) == [(0, 2), (1, 2)]
    assert {r["learning_rate"] for r in begins} == {run["params"]["learning_rate"]}
    assert {r["per_device_train_batch_size"] for r in begins} == {
        run["params"]["per_device_train_batch_size"]
    }
    assert len({r["pid"] for r in begins}) == 2


def test_two_nodes_end_a_failing_trial_on_both_then_a_stopped_node_resumes_the_next_with_node_0(
    tmp_path: Path,
) -> None:
    """On the local store, two trials:

    1. node 1's part fails (``model_init`` raises there only): the trial ends on both
       nodes, and node 0 records node 1's own error as the reason;
    2. both nodes take the next run together (one process group, the same params);
       the scheduler takes node 1 back mid-training (SIGTERM to its agent): both nodes'
       ranks checkpoint at the step they agree on; node 1 comes back, node 0 waited for
       it, and the two resume the run from the checkpoint together to its end.
    """
    sweep_id = create(TEST_SWEEPS / "record_ranks.py", "--n-trials", "2")
    record = tmp_path / "records"
    record.mkdir()
    group = group_args()
    fast = tmp_path / "fast"  # once it exists, steps no longer sleep
    slow = {**CPU, "WBSWEEP_TEST_SLEEP": "0.3", "WBSWEEP_TEST_SLEEP_UNLESS": str(fast)}
    follower = start_agent(
        sweep_id, record, *group, "--node-rank", "1",
        WBSWEEP_TEST_FAIL_ONCE=str(tmp_path / "failed-once"), **NO_WANDB, **slow,
    )  # fmt: skip
    leader = start_agent(sweep_id, record, *group, "--node-rank", "0", **slow)
    rejoined = None
    try:
        # Trial 1 fails before any step: these are trial 2's.
        wait_for(
            lambda: min(last_step(record, 0), last_step(record, 1)) >= 3,
            420,  # a hang detector: a loaded 2-core machine took over 240 s once
            "a few training steps on both nodes",
        )
        failed, second = status(sweep_id)["runs"]
        # The scheduler takes node 1 back: its part checkpoints at a step both nodes agree on.
        follower.send_signal(signal.SIGTERM)
        follower_out = output_of(follower, 90)
        assert follower.returncode == EXIT_TERMINATED, follower_out
        assert "joining trial 1" in follower_out and "joining trial 2" in follower_out
        run_dir = tmp_path / "outputs" / "record_ranks" / f"run-{second['id']}"
        wait_for(lambda: list(run_dir.glob("checkpoint-*")), 60, "a checkpoint")
        first = rank_records(record)
        first_pids = {r["pid"] for r in first}
        # Node 1 comes back; node 0 waited for it, and the two resume the run together.
        fast.touch()
        rejoined = start_agent(sweep_id, record, *group, "--node-rank", "1", **NO_WANDB, **slow)
        leader_out = output_of(leader, 420)
        rejoined_out = output_of(rejoined, 60)
    finally:
        for proc in (leader, follower, rejoined):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert leader.returncode == 0, leader_out
    assert rejoined.returncode == 0, rejoined_out

    runs = status(sweep_id)["runs"]
    assert [r["id"] for r in runs] == [failed["id"], second["id"]]
    failed, finished = runs
    # The failing node ended the trial on both, and node 0 says why: node 1's own error.
    assert failed["state"] == "failed"
    assert failed["reason"].startswith("node 1: ValueError: model_init fails once, as asked")
    assert finished["state"] == "finished" and finished["objective"] is not None
    assert finished["ran_as"] == RAN_AS
    # Both nodes took the run after the failed one together, and resumed it together.
    begins = began(record, finished["id"])
    assert_one_group_with_the_runs_params([r for r in begins if r["pid"] in first_pids], finished)
    resumed = [r for r in begins if r["pid"] not in first_pids]
    assert_one_group_with_the_runs_params(resumed, finished)
    # Both nodes' ranks stopped at the step the checkpoint holds, and resumed from it.
    (checkpoint,) = run_dir.glob("checkpoint-*")
    last = {rank: max(r["step"] for r in first if r["event"] == "step" and r["rank"] == rank)
            for rank in (0, 1)}  # fmt: skip
    assert last == {0: int(checkpoint.name.split("-")[1])} | {1: last[0]}


def test_a_node_without_wandb_credentials_trains_a_run_node_0_takes_from_wandb(
    wandb_double: WandbDouble, tmp_path: Path
) -> None:
    """Node 0 takes the run through a real `wandb agent`; node 1, with no W&B key and no
    W&B server, joins it: one process group, the run's params on both ranks, and W&B
    records the run as trained on 2 nodes.

    (How a failing node ends a trial on both is the local test's: nodes.py does it
    alike for either backend; a failed trial on W&B is tests/e2e/test_wandb_e2e.py's.)
    """
    sweep_id = create_wandb("--n-trials", "1")
    record = tmp_path / "records"
    record.mkdir()
    group = group_args()
    follower = start_agent(sweep_id, record, *group, "--node-rank", "1", **NO_WANDB, **CPU)
    leader = start_agent(sweep_id, record, *group, "--node-rank", "0", **CPU)
    try:
        leader_out = output_of(leader, 420)
        follower_out = output_of(follower, 60)
    finally:
        for proc in (leader, follower):
            if proc.poll() is None:
                proc.kill()
    assert leader.returncode == 0, leader_out
    assert follower.returncode == 0, follower_out
    assert "joining trial 1" in follower_out

    (finished,) = status(sweep_id)["runs"]
    assert finished["state"] == "finished" and finished["objective"] is not None
    assert finished["ran_as"] == RAN_AS
    assert_one_group_with_the_runs_params(began(record, finished["id"]), finished)
