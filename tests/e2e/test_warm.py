"""Warm workers (``wbsweep agent --warm``): one 2-rank accelerate group runs every trial.

Real ``accelerate launch`` groups of 2 gloo ranks on CPU, real Trainer trials,
the local store: what a user sees is the same sweep as cold mode, in less time,
and the same behaviour when a trial fails, a rank dies, the node is preempted or
the sweep is canceled: one scenario walks a warm worker through a killed rank, a failed
trial and a cancel, comparing a trial with a cold launch of it; another runs on W&B.
(A preempted warm trial, its checkpoint and its resumed rerun:
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


def _trains_after_init(record: Path, learning_rate: float) -> bool:
    """Whether a rank took a step after its ``model_init`` for ``learning_rate``."""
    for path in record.glob("rank*.jsonl"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        inits = [n for n, r in enumerate(lines) if r["event"] == "model_init"
                 and r["params"].get("learning_rate") == learning_rate]  # fmt: skip
        if inits and any(r["event"] == "step" for r in lines[inits[0] + 1 :]):
            return True
    return False


def test_a_warm_worker_gives_the_cold_results_through_a_killed_rank_a_failure_and_a_cancel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One warm worker (the default) through what can end a trial, and still the cold results.

    The warm grid's trials, in order, in 2-rank groups:

    * 0.001 loses rank 1 to SIGKILL at its first step: crashed, with why; the group is
      started again and the params run again;
    * 0.002 fails in ``model_init``: failed on its own, the group goes on;
    * 0.003 finishes with the objective a cold launch of its own gives it (a cold sweep
      runs 0.003 to compare with): a warm trial starts from a fresh model, fresh Trainer
      and the same seed, as a new process would, whatever ran before it in the group;
    * 0.004 is training when the sweep is canceled: stopped; 0.005 never starts.
    """
    cold_dir, record, fast = tmp_path / "cold", tmp_path / "records", tmp_path / "fast"
    cold_dir.mkdir()
    record.mkdir()
    args = ("--processes-per-trial", "2")
    monkeypatch.setenv("WBSWEEP_TEST_GRID_LRS", "0.003")
    cold = invoke_create(TEST_SWEEPS / "warm_grid.py", *args)
    monkeypatch.setenv("WBSWEEP_TEST_GRID_LRS", "0.001,0.002,0.003,0.004,0.005")
    sweep_id = invoke_create(TEST_SWEEPS / "warm_grid.py", *args)
    _agent(cold, cold_dir, "--cold")

    fast.touch()  # steps do not sleep until 0.003 starts; then they do, so the cancel
    agent = start_agent(  # comes while 0.004 trains
        sweep_id, record,
        WBSWEEP_TEST_FAIL_IF="learning_rate=0.002",
        WBSWEEP_TEST_KILL_ONCE=str(tmp_path / "killed"),
        WBSWEEP_TEST_SLEEP="0.3", WBSWEEP_TEST_SLEEP_UNLESS=str(fast),
    )  # fmt: skip
    try:
        inits = lambda: [r for r in rank_records(record) if r["event"] == "model_init"]  # noqa: E731
        wait_for(
            lambda: any(i["params"]["learning_rate"] == 0.003 for i in inits()),
            480,
            "trial 0.003 to start",
        )
        fast.unlink()
        wait_for(lambda: _trains_after_init(record, 0.004), 300, "trial 0.004 to train")
        assert invoke("cancel", sweep_id).exit_code == 0
        out, _ = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, out
    assert "warm: one process group of 2 rank(s)" in out
    assert "the warm group is started again" in out
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
    # The same trial gives the same objective, warm (after a failure) or cold.
    (cold_run,) = invoke_status(cold)["runs"]
    (finished,) = by_lr[0.003]
    assert finished["state"] == "finished"
    assert finished["params"] == cold_run["params"]
    assert finished["objective"] == pytest.approx(cold_run["objective"])
    assert rerun["objective"] != pytest.approx(cold_run["objective"])  # the params matter
    # Canceling the sweep stopped the running warm trial, and no other trial started.
    (canceled,) = by_lr[0.004]
    assert canceled["state"] == "stopped"
    assert 0.005 not in by_lr and len(runs) == 5
    assert invoke_status(sweep_id)["state"] == "CANCELED"
    logs = Path(os.environ["WBSWEEP_STORE"]).parent / f"sweep-{sweep_id}"
    for run in (rerun, finished, canceled):
        assert run["ran_as"] == {"ranks": 2, "mixed_precision": "no", "override": False,
                                 "warm": True}  # fmt: skip
        assert (logs / f"run-{run['id']}.log").is_file()

    records = rank_records(record)
    # Two groups in all: the first lost a rank; the second ran the rest, the failure too,
    # with one process per rank for all its trials (cold: one per rank per trial).
    assert len(_pids(records, "model_init")) == 4
    after = {r["pid"] for r in inits() if r["params"]["learning_rate"] in (0.002, 0.003, 0.004)}
    assert len(after) == 2
    second = [f"run-{run['id']}" for run in (rerun, finished, canceled)]
    begins = [r for r in records if r["event"] == "train_begin"]
    assert {b["pid"] for b in begins if b["output_dir"].endswith(tuple(second))} == after
    assert len(_pids(rank_records(cold_dir), "train_begin")) == 2
    # The datasets were built once per rank of each group; the model once per rank per trial.
    assert len([r for r in records if r["event"] == "datasets"]) == 4
    for run in runs:
        assert (
            sum(1 for i in inits() if i["params"] == run["params"])
            == len(by_lr[run["params"]["learning_rate"]]) * 2
        )
    # Each trial has its own W&B run (offline here), under the trial's run id.
    offline = list(Path(os.environ["WANDB_DIR"], "wandb").glob("offline-run-*"))
    ids = {path.name.rsplit("-", 1)[-1] for path in offline}
    assert ids == {r["id"] for r in runs} | {cold_run["id"]}
    wait_for(lambda: not processes_mentioning(str(record)), 30, "every process to end")
    assert processes_mentioning(str(cold_dir)) == []


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
    # Each run's last upload is slow (4 s), slower than the keeper's beat (2 s at a 6 s
    # heartbeat timeout): W&B shows the run crashed once the worker's agent has let it go,
    # while rank 0 still uploads it, and the keeper must not hand it out again.
    wandb_double.complete_delay = 4.0
    out = _agent(
        path, record, "--warm",
        WBSWEEP_TEST_FAIL_IF="learning_rate=0.002", WBSWEEP_HEARTBEAT_TIMEOUT="6",
    )  # fmt: skip
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
    # Named and tagged as cold trials' runs: the sweep and each run's number, backend, worker.
    sweep_id = path.split("/")[-1]
    assert sorted(r["display_name"] for r in runs) == [f"{sweep_id}-{n}" for n in (1, 2, 3)]
    assert [r["tags"] for r in runs] == [["wandb", f"{socket.gethostname()}-w0"]] * 3
    begins = [r for r in rank_records(record) if r["event"] == "train_begin"]
    assert len({b["pid"] for b in begins}) == 2  # one group for every trial
    assert sorted(b["process_index"] for b in begins) == [0, 0, 1, 1]
    assert processes_mentioning(str(record)) == []
