"""Warm workers (``wbsweep agent --warm``): one 2-rank accelerate group runs every trial.

Real ``accelerate launch`` groups of 2 gloo ranks on CPU, real Trainer trials,
the local store: what a user sees is the same sweep as cold mode, in less time,
and the same behaviour when a trial fails, a rank dies, the node is preempted or
the sweep is canceled.
"""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
from helpers import (
    TEST_SWEEPS,
    create,
    preempt_after_steps,
    processes_mentioning,
    rank_records,
    start_agent,
    status,
    wait_for,
    wbsweep,
)
from wandb_double import WandbDouble

pytestmark = pytest.mark.slow


def _agent(sweep_id: str, record: Path, *args: str, **env: str) -> str:
    result = wbsweep(
        "agent", sweep_id, *args, WBSWEEP_TEST_RECORD_DIR=str(record), timeout=600, **env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _pids(records: list[dict], event: str) -> set[int]:
    return {r["pid"] for r in records if r["event"] == event}


def test_a_warm_worker_runs_every_trial_in_one_group_with_the_cold_results(
    tmp_path: Path,
) -> None:
    cold_dir, warm_dir = tmp_path / "cold", tmp_path / "warm"
    cold_dir.mkdir()
    warm_dir.mkdir()
    args = ("--processes-per-trial", "2")
    cold = create(TEST_SWEEPS / "warm_grid.py", *args)
    warm = create(TEST_SWEEPS / "warm_grid.py", *args)
    _agent(cold, cold_dir, "--cold")
    out = _agent(warm, warm_dir)  # warm is the default
    assert "warm: one process group of 2 rank(s)" in out

    cold_runs, warm_runs = status(cold)["runs"], status(warm)["runs"]
    assert [r["state"] for r in warm_runs] == ["finished"] * 2, out
    # The same trials give the same objectives: each warm trial starts from a fresh
    # model, fresh Trainer and the same seed, as a new process would.
    by_params = {r["params"]["learning_rate"]: r["objective"] for r in cold_runs}
    for run in warm_runs:
        assert run["objective"] == pytest.approx(by_params[run["params"]["learning_rate"]])
        assert run["ran_as"] == {"ranks": 2, "mixed_precision": "no", "override": False,
                                 "warm": True}  # fmt: skip
        log = Path(os.environ["WBSWEEP_STORE"]).parent / f"sweep-{warm}" / f"run-{run['id']}.log"
        assert log.is_file()

    records = rank_records(warm_dir)
    # One process per rank for the whole sweep; cold mode had one per rank per trial.
    assert len(_pids(records, "train_begin")) == 2
    assert len(_pids(rank_records(cold_dir), "train_begin")) == 4
    # The datasets were built once per rank; the model once per rank per trial.
    assert len([r for r in records if r["event"] == "datasets"]) == 2
    inits = [r for r in records if r["event"] == "model_init"]
    for run in warm_runs:
        assert sum(1 for i in inits if i["params"] == run["params"]) == 2
    # Each trial has its own W&B run (offline here), under the trial's run id.
    offline = list(Path(os.environ["WANDB_DIR"], "wandb").glob("offline-run-*"))
    ids = {path.name.rsplit("-", 1)[-1] for path in offline}
    assert ids == {r["id"] for r in warm_runs + cold_runs}
    assert processes_mentioning(str(warm_dir)) == []


def test_a_failing_trial_keeps_the_group_and_a_killed_rank_restarts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "records"
    record.mkdir()
    monkeypatch.setenv("WBSWEEP_TEST_GRID_LRS", "0.001,0.002,0.003")
    sweep_id = create(TEST_SWEEPS / "warm_grid.py", "--processes-per-trial", "2")
    out = _agent(
        sweep_id, record, "--warm",
        WBSWEEP_TEST_FAIL_IF="learning_rate=0.002",
        WBSWEEP_TEST_KILL_ONCE=str(tmp_path / "killed"),
    )  # fmt: skip
    runs = status(sweep_id)["runs"]
    by_lr = {}
    for run in runs:
        by_lr.setdefault(run["params"]["learning_rate"], []).append(run)
    # The first trial lost rank 1 to SIGKILL: crashed, with why, and its params ran again.
    crashed, rerun = by_lr[0.001]
    assert crashed["state"] == "crashed"
    assert crashed["reason"] == "a rank was killed by SIGKILL"
    assert rerun["state"] == "finished" and rerun["retry_of"] == crashed["id"]
    # A trial whose model_init raises fails on its own; the group goes on.
    (failed,) = by_lr[0.002]
    assert failed["state"] == "failed"
    assert "model_init refuses learning_rate=0.002" in failed["reason"]
    assert by_lr[0.003][0]["state"] == "finished"
    assert "the warm group is started again" in out
    inits = [r for r in rank_records(record) if r["event"] == "model_init"]
    # Two groups in all: the first lost a rank; the second ran the rest, the failure too.
    assert len({r["pid"] for r in inits}) == 4
    after = {r["pid"] for r in inits if r["params"]["learning_rate"] in (0.002, 0.003)}
    assert len(after) == 2
    assert processes_mentioning(str(record)) == []


def test_a_preempted_warm_trial_checkpoints_and_resumes(tmp_path: Path) -> None:
    record = tmp_path / "records"
    record.mkdir()
    sweep_id = create(TEST_SWEEPS / "record_ranks.py", "--n-trials", "1",
                      "--processes-per-trial", "2")  # fmt: skip
    agent = start_agent(sweep_id, record, "--warm", WBSWEEP_TEST_SLEEP="0.3")
    preempt_after_steps(agent, lambda: [r.get("step", 0) for r in rank_records(record)])
    wait_for(lambda: not processes_mentioning(str(record)), 60, "every process to end")
    (run,) = status(sweep_id)["runs"]
    assert run["state"] == "preempted", run
    (checkpoint,) = (tmp_path / "outputs" / "record_ranks" / f"run-{run['id']}").glob(
        "checkpoint-*"
    )
    saved = int(checkpoint.name.split("-")[1])
    first = {r["pid"] for r in rank_records(record)}

    _agent(sweep_id, record, "--warm", WBSWEEP_TEST_SLEEP="0.01")
    (done,) = status(sweep_id)["runs"]
    assert (done["id"], done["state"]) == (run["id"], "finished")
    steps = [
        r["step"] for r in rank_records(record) if r["pid"] not in first and r["event"] == "step"
    ]
    assert min(steps) == saved + 1


def test_canceling_the_sweep_stops_the_warm_trial(tmp_path: Path) -> None:
    record = tmp_path / "records"
    record.mkdir()
    sweep_id = create(TEST_SWEEPS / "record_ranks.py", "--n-trials", "3",
                      "--processes-per-trial", "2")  # fmt: skip
    agent = start_agent(sweep_id, record, "--warm", WBSWEEP_TEST_SLEEP="0.3")
    try:
        wait_for(lambda: any(r["event"] == "step" for r in rank_records(record)), 120, "a step")
        assert wbsweep("cancel", sweep_id).returncode == 0
        out, _ = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, out
    (run,) = status(sweep_id)["runs"]
    assert run["state"] == "stopped"
    wait_for(lambda: not processes_mentioning(str(record)), 30, "every process to end")


def test_a_warm_worker_on_wandb_runs_each_trial_in_its_own_run_in_one_group(
    wandb_double: WandbDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "records"
    record.mkdir()
    monkeypatch.setenv("WBSWEEP_TEST_GRID_LRS", "0.001,0.002,0.003")
    result = wbsweep(
        "create", str(TEST_SWEEPS / "warm_grid.py"), "--backend", "wandb", "--project", "proj",
        "--processes-per-trial", "2", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    path = json.loads(result.stdout)["sweep_id"]
    wandb_double.complete_delay = 3.0  # each run's last upload is slow
    out = _agent(path, record, "--warm", WBSWEEP_TEST_FAIL_IF="learning_rate=0.002")
    assert "warm: one process group of 2 rank(s)" in out

    runs = wandb_double.runs(path.split("/")[-1])
    # A run's slow last upload did not hold the next trial back: the next run logged
    # its first training step before the server had answered that upload.
    pairs = zip(runs, runs[1:], strict=False)
    trained = [(before, run) for before, run in pairs if run["history"]]
    assert trained, out
    for before, run in trained:
        assert run["history"][0]["_timestamp"] < before["completed_at"], (before["id"], run["id"])
    states = {r["config"]["learning_rate"]: r["state"] for r in runs}
    assert states == {0.001: "finished", 0.002: "failed", 0.003: "finished"}, out
    for run in runs:
        if run["state"] != "finished":
            continue
        assert math.isfinite(run["summary"]["objective"])
        # The Trainer's own W&B reporting landed in this trial's run, as in cold mode.
        assert any("train/loss" in row for row in run["history"])
        assert run["config"]["output_dir"].endswith(f"run-{run['id']}")
    assert len(wandb_double.runs()) == 3  # rank 0 alone opened runs, one per trial
    # Named and tagged as cold trials' runs: the sweep and each run's number, backend, host.
    sweep_id = path.split("/")[-1]
    assert sorted(r["display_name"] for r in runs) == [f"{sweep_id}-{n}" for n in (1, 2, 3)]
    assert [r["tags"] for r in runs] == [["wandb", socket.gethostname()]] * 3
    begins = [r for r in rank_records(record) if r["event"] == "train_begin"]
    assert len({b["pid"] for b in begins}) == 2  # one group for every trial
    assert sorted(b["process_index"] for b in begins) == [0, 0, 1, 1]
    assert processes_mentioning(str(record)) == []
