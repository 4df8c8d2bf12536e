"""Warm workers (``wbsweep agent --warm``): one 2-rank accelerate group runs every trial.

Real ``accelerate launch`` groups of 2 gloo ranks on CPU, real Trainer trials,
the local store: what a user sees is the same sweep as cold mode, in less time,
and the same behaviour when a trial fails, a rank dies, the node is preempted or
the sweep is canceled. (A preempted warm trial, its checkpoint and its resumed rerun:
``test_preemption.py``, whose agent runs warm, the default.) Sweeps are created and
read back in this process (the same CLI: ``invoke_create``, ``invoke_status``); the
agents run as the console script.
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
    invoke,
    invoke_create,
    invoke_status,
    processes_mentioning,
    rank_records,
    start_agent,
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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm group's later trial gives what a fresh cold launch of the same params gives.

    The warm worker runs two trials (0.001, then 0.003) in one 2-rank group; a cold
    sweep runs the second one's params in a launch of its own, to compare with.
    """
    cold_dir, warm_dir = tmp_path / "cold", tmp_path / "warm"
    cold_dir.mkdir()
    warm_dir.mkdir()
    args = ("--processes-per-trial", "2")
    monkeypatch.setenv("WBSWEEP_TEST_GRID_LRS", "0.003")
    cold = invoke_create(TEST_SWEEPS / "warm_grid.py", *args)
    monkeypatch.setenv("WBSWEEP_TEST_GRID_LRS", "0.001,0.003")
    warm = invoke_create(TEST_SWEEPS / "warm_grid.py", *args)
    _agent(cold, cold_dir, "--cold")
    out = _agent(warm, warm_dir)  # warm is the default
    assert "warm: one process group of 2 rank(s)" in out

    cold_runs, warm_runs = invoke_status(cold)["runs"], invoke_status(warm)["runs"]
    assert [r["state"] for r in warm_runs] == ["finished"] * 2, out
    assert [r["params"]["learning_rate"] for r in warm_runs] == [0.001, 0.003]
    # The same trial gives the same objective: the warm group's second trial starts from
    # a fresh model, fresh Trainer and the same seed, as a new process would.
    (cold_run,) = cold_runs
    assert warm_runs[1]["params"] == cold_run["params"]
    assert warm_runs[1]["objective"] == pytest.approx(cold_run["objective"])
    assert warm_runs[0]["objective"] != pytest.approx(cold_run["objective"])  # params matter
    for run in warm_runs:
        assert run["ran_as"] == {"ranks": 2, "mixed_precision": "no", "override": False,
                                 "warm": True}  # fmt: skip
        log = Path(os.environ["WBSWEEP_STORE"]).parent / f"sweep-{warm}" / f"run-{run['id']}.log"
        assert log.is_file()

    records = rank_records(warm_dir)
    # One process per rank for the whole sweep; cold mode has one per rank per trial.
    assert len(_pids(records, "train_begin")) == 2
    assert len(_pids(rank_records(cold_dir), "train_begin")) == 2
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


def _trains_after_init(record: Path, learning_rate: float) -> bool:
    """Whether a rank took a step after its ``model_init`` for ``learning_rate``."""
    for path in record.glob("rank*.jsonl"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        inits = [n for n, r in enumerate(lines) if r["event"] == "model_init"
                 and r["params"].get("learning_rate") == learning_rate]  # fmt: skip
        if inits and any(r["event"] == "step" for r in lines[inits[0] + 1 :]):
            return True
    return False


def test_a_failing_trial_keeps_the_group_a_killed_rank_restarts_it_and_cancel_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One warm worker through what can end a trial: a killed rank, a failure, a cancel.

    The grid's trials in order: 0.001 loses rank 1 to SIGKILL at its first step (the
    group is started again and the params run again), 0.002 fails in ``model_init``
    (the group goes on), 0.003 is training when the sweep is canceled (it stops, and
    0.004 never starts).
    """
    record = tmp_path / "records"
    record.mkdir()
    monkeypatch.setenv("WBSWEEP_TEST_GRID_LRS", "0.001,0.002,0.003,0.004")
    sweep_id = invoke_create(TEST_SWEEPS / "warm_grid.py", "--processes-per-trial", "2")
    agent = start_agent(
        sweep_id, record, "--warm",
        WBSWEEP_TEST_FAIL_IF="learning_rate=0.002",
        WBSWEEP_TEST_KILL_ONCE=str(tmp_path / "killed"),
        WBSWEEP_TEST_SLEEP="0.3",  # so the cancel comes while 0.003 trains
    )  # fmt: skip
    try:
        wait_for(lambda: _trains_after_init(record, 0.003), 480, "trial 0.003 to train")
        assert invoke("cancel", sweep_id).exit_code == 0
        out, _ = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, out
    runs = invoke_status(sweep_id)["runs"]
    by_lr: dict[float, list[dict]] = {}
    for run in runs:
        by_lr.setdefault(run["params"]["learning_rate"], []).append(run)
    # The first trial lost rank 1 to SIGKILL: crashed, with why, and its params ran again.
    crashed, rerun = by_lr[0.001]
    assert crashed["state"] == "crashed"
    assert crashed["reason"] == "a rank was killed by SIGKILL"
    assert rerun["state"] == "finished" and rerun["retry_of"] == crashed["id"]
    assert rerun["params"] == crashed["params"]
    # A trial whose model_init raises fails on its own; the group goes on.
    (failed,) = by_lr[0.002]
    assert failed["state"] == "failed"
    assert "model_init refuses learning_rate=0.002" in failed["reason"]
    # Canceling the sweep stopped the running warm trial, and no other trial started.
    (canceled,) = by_lr[0.003]
    assert canceled["state"] == "stopped"
    assert 0.004 not in by_lr and len(runs) == 4
    assert invoke_status(sweep_id)["state"] == "CANCELED"
    assert "the warm group is started again" in out
    inits = [r for r in rank_records(record) if r["event"] == "model_init"]
    # Two groups in all: the first lost a rank; the second ran the rest, the failure too.
    assert len({r["pid"] for r in inits}) == 4
    after = {r["pid"] for r in inits if r["params"]["learning_rate"] in (0.002, 0.003)}
    assert len(after) == 2
    wait_for(lambda: not processes_mentioning(str(record)), 30, "every process to end")


def test_a_warm_worker_on_wandb_runs_each_trial_in_its_own_run_in_one_group(
    wandb_double: WandbDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "records"
    record.mkdir()
    monkeypatch.setenv("WBSWEEP_TEST_GRID_LRS", "0.001,0.002,0.003")
    result = invoke(
        "create", str(TEST_SWEEPS / "warm_grid.py"), "--backend", "wandb", "--project", "proj",
        "--processes-per-trial", "2", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
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
