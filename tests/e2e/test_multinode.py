"""One trial across two nodes: two real `wbsweep agent`s on this machine, over loopback.

Node 0 takes each run from the local store, or from W&B (the test double) through
a real `wandb agent`; node 1 joins it, with no W&B credentials at all. Each node
runs 1 rank on CPU under its own real `accelerate launch`, and the two ranks form
one gloo process group of world size 2.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from helpers import (
    TEST_SWEEPS,
    create,
    create_wandb,
    rank_records,
    start_agent,
    status,
    wait_for,
)

from wbsweep.errors import EXIT_TERMINATED
from wbsweep.slots import free_port

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["local", "wandb"])
def test_two_nodes_train_each_trial_together_and_a_failing_node_ends_it_on_both(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "wandb":
        request.getfixturevalue("wandb_double")
        sweep_id = create_wandb("--n-trials", "2")
    else:
        sweep_id = create(TEST_SWEEPS / "record_ranks.py", "--n-trials", "2")
    record = tmp_path / "records"
    record.mkdir()
    group = ["--nodes", "2", "--main-host", "127.0.0.1", "--main-port", str(free_port())]
    cpu = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    # Node 1's first part of a trial fails (model_init raises there only). Only node 0
    # talks to the sweep's backend: node 1 has no W&B key and no W&B server.
    follower = start_agent(
        sweep_id, record, *group, "--node-rank", "1",
        WBSWEEP_TEST_FAIL_ONCE=str(tmp_path / "failed-once"),
        WANDB_API_KEY="", WANDB_BASE_URL="http://127.0.0.1:9", **cpu,
    )  # fmt: skip
    leader = start_agent(sweep_id, record, *group, "--node-rank", "0", **cpu)
    try:
        leader_out, _ = leader.communicate(timeout=240)
        follower_out, _ = follower.communicate(timeout=60)
    finally:
        for proc in (leader, follower):
            if proc.poll() is None:
                proc.kill()
    assert leader.returncode == 0, leader_out
    assert follower.returncode == 0, follower_out
    assert "joining trial 1" in follower_out and "joining trial 2" in follower_out

    failed, finished = status(sweep_id)["runs"]
    # The failing node ended the trial on both, and node 0 says why: node 1's own error.
    assert failed["state"] == "failed"
    if backend == "local":  # W&B keeps no failure reason
        assert failed["reason"].startswith("node 1: ValueError: model_init fails once, as asked")
    # Then both nodes took the next run together: one process group, the same params.
    assert finished["state"] == "finished" and finished["objective"] is not None
    assert finished["ran_as"] == {
        "ranks": 2,
        "mixed_precision": "no",
        "override": False,
        "nodes": 2,
    }
    began = [
        r
        for r in rank_records(record)
        if r["event"] == "train_begin" and r["output_dir"].endswith(f"run-{finished['id']}")
    ]
    assert sorted((r["process_index"], r["world_size"]) for r in began) == [(0, 2), (1, 2)]
    assert {r["learning_rate"] for r in began} == {finished["params"]["learning_rate"]}
    assert {r["per_device_train_batch_size"] for r in began} == {
        finished["params"]["per_device_train_batch_size"]
    }
    assert len({r["pid"] for r in began}) == 2


def test_a_stopped_node_ends_the_trial_on_both_and_the_nodes_resume_it_together(
    tmp_path: Path,
) -> None:
    sweep_id = create(TEST_SWEEPS / "record_ranks.py", "--n-trials", "1")
    record = tmp_path / "records"
    record.mkdir()
    group = ["--nodes", "2", "--main-host", "127.0.0.1", "--main-port", str(free_port())]
    slow = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "WBSWEEP_TEST_SLEEP": "0.3"}
    fast = tmp_path / "fast"  # once it exists, steps no longer sleep
    slow["WBSWEEP_TEST_SLEEP_UNLESS"] = str(fast)
    follower = start_agent(sweep_id, record, *group, "--node-rank", "1", **slow)
    leader = start_agent(sweep_id, record, *group, "--node-rank", "0", **slow)
    rejoined = None
    try:
        wait_for(
            lambda: max((r.get("step", 0) for r in rank_records(record)), default=0) >= 3,
            120,
            "a few training steps on both nodes",
        )
        # The scheduler takes node 1 back: its part checkpoints at a step both nodes agree on.
        follower.send_signal(signal.SIGTERM)
        follower_out, _ = follower.communicate(timeout=90)
        assert follower.returncode == EXIT_TERMINATED, follower_out
        run_dir = tmp_path / "outputs" / "record_ranks" / f"run-{status(sweep_id)['runs'][0]['id']}"
        wait_for(lambda: list(run_dir.glob("checkpoint-*")), 60, "a checkpoint")
        first = rank_records(record)
        first_pids = {r["pid"] for r in first}
        # Node 1 comes back; node 0 waited for it, and the two resume the run together.
        fast.touch()
        rejoined = start_agent(sweep_id, record, *group, "--node-rank", "1", **slow)
        leader_out, _ = leader.communicate(timeout=240)
        rejoined_out, _ = rejoined.communicate(timeout=60)
    finally:
        for proc in (leader, follower, rejoined):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert leader.returncode == 0, leader_out
    assert rejoined.returncode == 0, rejoined_out
    (run,) = status(sweep_id)["runs"]
    assert run["state"] == "finished" and run["objective"] is not None
    # Both nodes' ranks stopped at the step the checkpoint holds, and resumed from it.
    (checkpoint,) = run_dir.glob("checkpoint-*")
    last = {rank: max(r["step"] for r in first if r["event"] == "step" and r["rank"] == rank)
            for rank in (0, 1)}  # fmt: skip
    assert last == {0: int(checkpoint.name.split("-")[1])} | {1: last[0]}
    resumed = [
        r
        for r in rank_records(record)
        if r["pid"] not in first_pids and r["event"] == "train_begin"
    ]
    assert sorted((r["process_index"], r["world_size"]) for r in resumed) == [(0, 2), (1, 2)]
