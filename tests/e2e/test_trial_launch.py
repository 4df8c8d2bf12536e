"""The trial entrypoint for real: 2-rank launches, one run, clean failures, signals.

Slow: every test trains (under ``accelerate launch``, or in this process).
The trial's pure parts are in ``tests/unit/test_trial.py``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, processes_mentioning

from wbsweep import procs
from wbsweep.agent import free_port
from wbsweep.errors import EXIT_TERMINATED
from wbsweep.lifecycle import run_trial
from wbsweep.sweepfile import load_sweep_file
from wbsweep.trial import main as trial_main

pytestmark = pytest.mark.slow

TINY = REPO / "sweeps" / "tiny.py"
RECORD_RANKS = REPO / "tests" / "sweeps" / "record_ranks.py"
BIN = Path(sys.executable).parent
PARAMS = {"learning_rate": 0.003, "per_device_train_batch_size": 32.0, "hidden_dropout_prob": 0.05}


# -- real trials ------------------------------------------------------------------------


def wandb_records(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Summary and history values from an offline run's ``.wandb`` log.

    Offline runs keep no ``wandb-summary.json``; the ``.wandb`` file is a
    LevelDB-style log (7-byte W&B header, 32 KiB blocks, 7-byte record headers)
    of ``Record`` protobufs.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    found: dict[str, dict[str, Any]] = {"summary": {}, "history": {}, "config": {}}
    offset, pending = 7, b""
    while offset + 7 <= len(data):
        if 32768 - offset % 32768 < 7:  # block trailer too small for a header: padding
            offset += 32768 - offset % 32768
            continue
        length, kind = struct.unpack("<HB", data[offset + 4 : offset + 7])
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind not in (1, 4):
            continue
        record = pb.Record()
        record.ParseFromString(pending)
        for item in record.summary.update:
            found["summary"][item.key] = json.loads(item.value_json)
        for item in record.history.item:
            found["history"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        for item in record.config.update:
            found["config"][item.key] = json.loads(item.value_json)
    return found


def launch_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ACCELERATE_USE_CPU="true",
        WANDB_MODE="offline",
        WANDB_DIR=str(tmp_path),
        WANDB_SILENT="true",
        WBSWEEP_TEST_RECORD_DIR=str(tmp_path / "records"),
        OMP_NUM_THREADS="1",
        **extra,
    )
    (tmp_path / "records").mkdir(exist_ok=True)
    return env


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Train in this process with one torch thread, as every launch here does (OMP_NUM_THREADS=1).

    torch would use every core; on a small machine running other tests too, the extra
    threads mostly spin. The process's own setting is back afterwards.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def records(tmp_path: Path, event: str) -> list[dict[str, Any]]:
    lines = []
    for path in sorted((tmp_path / "records").glob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return [line for line in lines if line["event"] == event]


@pytest.mark.slow
def test_two_ranks_train_alike_and_rank_zero_owns_one_run(tmp_path: Path) -> None:
    from wbsweep.backends.local import LocalBackend

    # A real local sweep run, so the trial's report lands in the store.
    store = LocalBackend(os.environ["WBSWEEP_STORE"])
    sweep_id = store.create(
        {
            "method": "grid",
            "metric": {"name": "objective", "goal": "minimize"},
            "parameters": {
                "learning_rate": {"values": [0.003]},
                "per_device_train_batch_size": {"values": [32]},
                "hidden_dropout_prob": {"values": [0.05]},
                "lr_scheduler_type": {"values": ["cosine"]},
            },
        }
    )
    claimed = store.claim_next(sweep_id, "test-worker")
    assert claimed is not None
    (tmp_path / "params.json").write_text(json.dumps(claimed.params))
    argv = [
        str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(free_port()),
        "-m", "wbsweep.trial", str(RECORD_RANKS),
        "--metric", "objective", "--goal", "minimize", "params.json",
    ]  # fmt: skip
    env = launch_env(tmp_path, WANDB_RUN_ID=claimed.id, WANDB_SWEEP_ID=sweep_id)

    started = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    print(f"2-rank launch took {time.monotonic() - started:.1f}s")

    assert result.returncode == 0, result.stderr[-3000:]
    inits, begins = records(tmp_path, "model_init"), records(tmp_path, "train_begin")
    assert sorted(r["rank"] for r in inits) == [0, 1]  # model_init once per rank
    assert inits[0]["params"] == inits[1]["params"] == claimed.params
    assert [r["world_size"] for r in begins] == [2, 2]
    for record in begins:
        assert record["learning_rate"] == 0.003
        assert record["per_device_train_batch_size"] == 32
        assert record["lr_scheduler_type"] == "cosine"
        assert record["hidden_dropout_prob"] == 0.05  # a model param reached the model
        assert record["output_dir"] == f"outputs/record_ranks/run-{claimed.id}"
    assert (tmp_path / "outputs" / "record_ranks" / f"run-{claimed.id}").is_dir()

    # Rank 0's run is the only one; the Trainer's WandbCallback logged into it too.
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert run_dir.name.endswith(claimed.id)
    logged = wandb_records(run_dir)
    objective = logged["summary"]["objective"]
    assert math.isfinite(objective) and objective == logged["history"]["objective"]
    assert objective == logged["history"]["eval_loss"]
    assert "train/loss" in logged["history"] or "train/train_loss" in logged["history"]
    assert logged["config"]["learning_rate"] == 0.003

    (run,) = store.runs(sweep_id)
    assert run.started_at is not None
    assert run.objective == pytest.approx(objective)
    assert run.metrics["eval_loss"] == pytest.approx(objective)
    # Every rank has exited: no process outlives the trial.
    for record in inits:
        with pytest.raises(ProcessLookupError):
            os.kill(record["pid"], 0)


@pytest.mark.slow
def test_run_trial_runs_again_in_the_same_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WBSWEEP_STORE")
    monkeypatch.setenv("WBSWEEP_TEST_RECORD_DIR", str(tmp_path / "records"))
    (tmp_path / "records").mkdir()
    sweep = load_sweep_file(TINY)
    reports: list[tuple[str, Any]] = []
    steps: list[tuple[str, int, int]] = []

    class Recorder:  # a Reporter (wbsweep.backends.base)
        def record_started(self, run_id: str, ran_as: dict[str, Any] | None = None) -> None:
            reports.append(("started", run_id))

        def record_history(self, run_id: str, step: int, metrics: dict[str, float]) -> None:
            pass  # tiny.py evaluates only at the end

        def record_result(self, run_id: str, objective: float, metrics: dict[str, float]) -> None:
            reports.append(("finished", (run_id, objective, metrics["eval_loss"])))

        def record_progress(self, run_id: str, progress: dict[str, Any]) -> None:
            steps.append((run_id, progress["step"], progress["total"]))

    with one_torch_thread():
        results = [
            run_trial(
                sweep, {**PARAMS, "learning_rate": lr}, run_id=run_id, metric="loss",
                goal="minimize", reporter=Recorder(),
            )
            for run_id, lr in [("first", 0.003), ("second", 0.0001)]
        ]  # fmt: skip

    assert [r.run_id for r in results] == ["first", "second"]
    assert all(
        math.isfinite(r.objective) and r.objective == r.metrics["eval_loss"] for r in results
    )
    assert results[0].output_dir == os.path.join("outputs", "tiny", "run-first")
    assert reports == [
        ("started", "first"),
        ("finished", ("first", results[0].objective, results[0].objective)),
        ("started", "second"),
        ("finished", ("second", results[1].objective, results[1].objective)),
    ]
    for run_id in ("first", "second"):  # rank 0 said where it was, up to its last step
        mine = [step for step in steps if step[0] == run_id]
        assert mine and mine[0][1] == 1 and mine[-1][1] == mine[-1][2] > 1
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert [p.name.rsplit("-", 1)[1] for p in runs] == ["first", "second"]
    # wandb-core may still be flushing the offline log right after finish().
    deadline = time.monotonic() + 20
    while "loss" not in (summary := wandb_records(runs[1])["summary"]):
        assert time.monotonic() < deadline, summary
        time.sleep(0.5)
    assert summary["loss"] == results[1].objective


@pytest.mark.slow
def test_model_init_failure_is_one_line_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "params.json").write_text(json.dumps(PARAMS))
    failing = {"WANDB_RUN_ID": "fails1", "WBSWEEP_TEST_FAIL_IF": "hidden_dropout_prob=0.05"}
    env = launch_env(tmp_path, **failing)
    argv = [sys.executable, "-m", "wbsweep.trial", str(RECORD_RANKS), "params.json"]

    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("wbsweep.trial:")]
    source = RECORD_RANKS.read_text().splitlines()
    raised = 1 + next(i for i, line in enumerate(source) if "model_init refuses" in line)
    assert errors == [
        "wbsweep.trial: error: ValueError: model_init refuses hidden_dropout_prob=0.05 "
        f"(record_ranks.py line {raised})"
    ]
    assert "Traceback" not in result.stderr

    # WBSWEEP_DEBUG=1: the same failure with its traceback. Here the trial's entry point
    # runs in this process (a second process would import torch and Transformers again
    # for it); its SIGTERM handler and parent-death signal are undone afterwards.
    for name, value in {**failing, "WANDB_RUN_ID": "fails2", "WBSWEEP_DEBUG": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WBSWEEP_TEST_RECORD_DIR", str(tmp_path / "records"))
    capsys.readouterr()
    handler = signal.getsignal(signal.SIGTERM)
    try:
        code = trial_main([str(RECORD_RANKS), "params.json"])
    finally:
        signal.signal(signal.SIGTERM, handler)
        procs.die_with_parent(0)  # 0: no signal when this process's parent ends
    debug = capsys.readouterr().err
    assert code == 1 and "Traceback (most recent call last)" in debug
    assert errors[0] in debug.splitlines()


@pytest.mark.slow
def test_sigterm_ends_the_trial_promptly_with_143(tmp_path: Path) -> None:
    (tmp_path / "params.json").write_text(json.dumps(PARAMS))
    env = launch_env(tmp_path, WANDB_RUN_ID="term1", WBSWEEP_TEST_SLEEP="2")
    argv = [sys.executable, "-m", "wbsweep.trial", str(RECORD_RANKS), "params.json"]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not records(tmp_path, "step") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert records(tmp_path, "step"), "the trial never started training"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_TERMINATED
    assert time.monotonic() - sent < 30
    assert "wbsweep.trial: error: terminated by SIGTERM" in stderr
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_sigkilled_launcher_leaves_no_rank_running(tmp_path: Path) -> None:
    (tmp_path / "params.json").write_text(json.dumps(PARAMS))
    env = launch_env(tmp_path, WANDB_RUN_ID="orphan1", WBSWEEP_TEST_SLEEP="2")
    argv = [
        str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(free_port()), "-m", "wbsweep.trial", str(RECORD_RANKS),
        "params.json",
    ]  # fmt: skip
    launcher = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len({r["rank"] for r in records(tmp_path, "step")}) < 2:
            assert time.monotonic() < deadline, "the ranks never started training"
            time.sleep(0.2)
        launcher.kill()  # SIGKILL: the launcher cannot forward anything
        launcher.wait()
        pids = {r["pid"] for r in records(tmp_path, "model_init")}
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in pids if _alive(pid)]
    finally:
        launcher.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not reaped it yet.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


# A rank that takes longer than accelerate 1.16's 5 s to save after SIGTERM, beside a
# helper in a session of its own (as a rank's wandb-core is); "saved" says what it saw.
# Its launcher's death is a SIGTERM too, as for every rank (accelerate < 1.16 leaves at once).
_SLOW_SAVER = """
import pathlib, signal, subprocess, sys, time
from wbsweep import procs
procs.die_with_parent()
here = pathlib.Path(sys.argv[1])
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                          start_new_session=True)
notices = []
signal.signal(signal.SIGTERM, lambda *_: notices.append(time.monotonic()))
(here / "ready").write_text("")
while not notices:
    time.sleep(0.05)
time.sleep(6.5)  # the checkpoint
(here / "saved").write_text(str(helper.poll() is None))
helper.kill()
sys.exit(143)
"""


@pytest.mark.slow
@pytest.mark.parametrize("to", ["group", "launcher"])
def test_a_sigtermed_one_rank_launch_leaves_the_rank_its_grace_period(
    tmp_path: Path, to: str
) -> None:
    """SIGTERM to a 1-rank trial's launcher, from a worker (to its process group) or from
    ``wandb agent`` (to the launcher alone): the rank saves for longer than accelerate's
    own 5 s, its helper process alive throughout; nothing is left running after."""
    import yaml

    from wbsweep.launch import launch_argv
    from wbsweep.slots import WorkerSlot, accelerate_config

    config = tmp_path / "accelerate.yaml"
    config.write_text(yaml.safe_dump(accelerate_config(WorkerSlot(0, (), 1, free_port()))))
    (tmp_path / "slow_saver.py").write_text(_SLOW_SAVER)
    argv = launch_argv(str(config), str(tmp_path), [], module="slow_saver")
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    env = launch_env(tmp_path, PYTHONPATH=path)
    launcher = procs.start_group(argv, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "ready").exists():
            assert time.monotonic() < deadline and launcher.poll() is None, "no rank started"
            time.sleep(0.1)
        if to == "group":
            procs.signal_group(launcher.pid, signal.SIGTERM)
        else:
            launcher.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while not (tmp_path / "saved").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        launcher.wait(timeout=10)
    finally:
        procs.signal_group(launcher.pid, signal.SIGKILL)
    assert (tmp_path / "saved").read_text() == "True"  # saved, and its helper untouched
    assert not processes_mentioning(str(tmp_path / "accelerate.yaml"))
