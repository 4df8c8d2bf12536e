"""The W&B path, end to end: real `wandb.sweep`, real `wandb agent`, real `wandb.Api()`.

No W&B server is reachable here, so every test runs against the W&B protocol
test double in `tests/wandb_double/` (an HTTP server on 127.0.0.1 that answers
what the real SDK sends and decides runs with the real `sweeps` engine). Nothing
in wbsweep or the SDK is mocked. Slow: every test runs the ``wbsweep`` console
script, most start ``wandb agent`` processes and 2-rank trials.
"""

from __future__ import annotations

import json
import math
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from helpers import (
    TEST_SWEEPS,
    create_wandb,
    processes_mentioning,
    rank_records,
    signal_when,
    start_agent,
    training_pids,
    wait_for,
    wait_for_ranks_to_train,
    wbsweep,
)
from wandb_double import WandbDouble

# Tiny models train on one torch thread here and in every rank (tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


SECRET_SCAN_SKIP = {".db", ".wandb"}


def assert_key_never_written(key: str, root: Path, *outputs: str) -> None:
    for text in outputs:
        assert key not in text
    for path in root.rglob("*"):
        if path.is_file() and path.suffix not in SECRET_SCAN_SKIP:
            assert key.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_two_agents_then_two_ranks_on_wandb_a_bare_sweep_id_best_and_cancel(
    wandb_double: WandbDouble, tmp_path: Path
) -> None:
    """A 3-trial W&B sweep: two trials by 2 ``wandb agent`` workers, then a 2-rank one, canceled.

    It proves: the sweep's command is wbsweep's launcher. A bare sweep id with ``-p``/``-e``
    (as ``wandb agent``'s flags) is the W&B sweep and no local store is made; ``--count 1``
    ends each of 2 workers after one trial, with the third trial left; both ``wandb agent``
    workers ran a trial; each run's config, history, name and tags are what the trial and its
    Trainer logged; ``best`` and ``status`` (the full path, or the bare id with
    ``WANDB_PROJECT``) read the runs. Then a 2-rank trial: both ranks train with the swept
    params, only rank 0 makes a run, the run records the agent's explicit 2 ranks; ``wbsweep
    cancel`` while both train ends every rank and the agent, the run is killed (W&B) and
    stopped (``status``). The API key is written nowhere.
    """
    record = tmp_path / "records"
    record.mkdir()
    path = create_wandb("--n-trials", "3", "--method", "random")
    entity, project, sweep_id = path.split("/")
    assert (entity, project) == (wandb_double.entity, "proj")
    command = wandb_double.sweep(sweep_id)["config"]["command"]
    assert command[1:4] == ["${interpreter}", "-m", "wbsweep.launch"]

    # As `wandb agent -p PROJECT -e ENTITY ID --count 1`, on each of 2 workers: one trial each.
    result = wbsweep(
        "agent", sweep_id, "-p", project, "-e", entity, "--count", "1", "--workers", "2",
        "--store", str(tmp_path / "no-store.db"), WBSWEEP_TEST_RECORD_DIR=str(record),
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "no-store.db").exists()

    runs = wandb_double.runs(sweep_id)
    assert len(runs) == 2  # one each; the sweep's third trial is left
    assert [r["state"] for r in runs] == ["finished"] * 2
    assert len({r["agent"] for r in runs}) == 2  # both wandb agents ran trials
    for run in runs:
        assert math.isfinite(run["summary"]["objective"])
        # The run config holds the sweep params and the effective TrainingArguments.
        swept_lr = run["raw_config"]["learning_rate"]["value"]
        assert run["config"]["learning_rate"] == pytest.approx(swept_lr)
        assert run["config"]["output_dir"].endswith(f"run-{run['id']}")
        # The Trainer's own W&B reporting landed in this same run.
        assert any("train/loss" in row for row in run["history"])
        # The objective was logged at each epoch's evaluation, then at the end.
        assert sum("objective" in row for row in run["history"]) == 3
        (began,) = [
            b for b in rank_records(record)
            if b["event"] == "train_begin" and b["output_dir"].endswith(f"run-{run['id']}")
        ]  # fmt: skip
        assert began["learning_rate"] == pytest.approx(swept_lr)
    # One W&B run per trial, no stray ones.
    assert len(wandb_double.runs()) == 2
    # Each run is named for the sweep and its number in it, and tagged with the backend
    # and the worker that ran it (one of this host's two).
    assert sorted(r["display_name"] for r in runs) == [f"{sweep_id}-{n}" for n in (1, 2)]
    workers = [f"{socket.gethostname()}-w{n}" for n in (0, 1)]
    assert all(r["tags"][0] == "wandb" and r["tags"][1] in workers for r in runs), runs

    best = wbsweep("best", path, "--json")
    assert best.returncode == 0, best.stderr
    got = json.loads(best.stdout)
    winner = min(runs, key=lambda r: r["summary"]["objective"])
    assert got["run_id"] == winner["id"]
    assert got["objective"] == pytest.approx(winner["summary"]["objective"])
    assert set(got["hyperparameters"]) == {
        "learning_rate", "per_device_train_batch_size", "hidden_dropout_prob"
    }  # fmt: skip
    status = json.loads(wbsweep("status", path, "--json").stdout)
    assert [r["state"] for r in status["runs"]] == ["finished"] * 2
    assert status["trial_shape"]["ranks"] == 1  # as the sweep records, each run ran so
    for run in status["runs"]:
        assert run["ran_as"] == {"ranks": 1, "mixed_precision": "no", "override": False,
                                 "warm": True}  # fmt: skip
    # As `wandb agent ID` with WANDB_PROJECT set: the local store does not know the id.
    shown = wbsweep("status", sweep_id, "--json", WANDB_PROJECT=project, WANDB_ENTITY=entity)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["sweep_id"] == path

    # The third trial, on 2 ranks. A step every 5 s, so it still trains when the cancel lands
    # (with batches of 32 on 2 ranks a trial is 16 steps).
    agent = start_agent(path, record, "--processes-per-trial", "2", WBSWEEP_TEST_SLEEP="5")
    try:
        training = wait_for_ranks_to_train(record, 2)
        assert len(group_processes(record)) >= 2
        (third,) = [r for r in wandb_double.runs(sweep_id) if r["state"] == "running"]
        cancel = wbsweep("cancel", path)
        assert cancel.returncode == 0, cancel.stderr
        wait_for(lambda: not group_processes(record), 90, "every rank to end")
        wait_for(lambda: wandb_double.run(third["id"])["state"] != "running", 60, "the run to end")
        out, _ = agent.communicate(timeout=120)
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=60)
    swept_lr = third["raw_config"]["learning_rate"]["value"]
    mine = [
        b for b in rank_records(record)
        if b["event"] == "train_begin" and b["output_dir"].endswith(f"run-{third['id']}")
    ]  # fmt: skip
    assert sorted(b["process_index"] for b in mine) == [0, 1]
    assert {b["pid"] for b in mine} == training
    for b in mine:
        assert b["learning_rate"] == pytest.approx(swept_lr)
    # Only rank 0 made a run.
    assert len(wandb_double.runs()) == 3
    assert wandb_double.run(third["id"])["state"] == "killed"
    status = json.loads(wbsweep("status", path, "--json").stdout)
    (stopped,) = [r for r in status["runs"] if r["id"] == third["id"]]
    assert stopped["state"] == "stopped"
    # The sweep records 1 rank per trial; this agent's explicit flag ran 2, and the run says so.
    assert stopped["ran_as"] == {"ranks": 2, "mixed_precision": "no", "override": True,
                                 "warm": True}  # fmt: skip
    assert processes_mentioning(str(record)) == []
    assert_key_never_written(wandb_double.api_key, tmp_path, result.stdout, result.stderr, out)


def group_processes(record: Path) -> list[tuple[int, str]]:
    """The ranks of the warm groups whose trials record to ``record``."""
    return [p for p in processes_mentioning(str(record)) if "wbsweep.warm_rank" in p[1]]


def test_auto_picks_local_without_a_login(tmp_path: Path) -> None:
    result = wbsweep("create", str(TEST_SWEEPS / "record_ranks.py"), NETRC=str(tmp_path / "none"))
    assert result.returncode == 0, result.stderr
    assert "Backend: local (auto: no W&B login for " in result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_not_logged_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    result = wbsweep("create", str(TEST_SWEEPS / "record_ranks.py"), "--backend", "wandb")
    one_line_error(result, 7, "not logged in", "wandb login", "--backend local")
    assert not (tmp_path / ".wbsweep").exists()
    one_line_error(wbsweep("best", "e/p/abc12345"), 7, "not logged in")


def test_rejected_key_never_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with WandbDouble(require_key="a" * 40) as double:
        wrong = "b" * 40
        for key, value in double.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("WANDB_API_KEY", wrong)
        result = wbsweep("create", str(TEST_SWEEPS / "record_ranks.py"), "--backend", "wandb")
        one_line_error(result, 7, "rejected the API key")
        assert wrong not in result.stdout + result.stderr
        assert double.sweeps() == []


def test_server_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the command runs
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_API_KEY", "c" * 40)
    started = time.monotonic()
    result = wbsweep("status", "e/p/abc12345")
    one_line_error(result, 8, "cannot reach W&B", f"127.0.0.1:{port}")
    assert time.monotonic() - started < 60


def test_auto_picks_wandb_when_logged_in_and_says_so_then_sweep_not_found_and_wrong_project(
    wandb_double: WandbDouble,
) -> None:
    """``create`` with no ``--backend`` picks W&B when logged in and says why, never the key;
    then, on that W&B sweep, one-line errors for a sweep id, a project or a path that is wrong,
    and for ``best`` before any run finished."""
    result = wbsweep("create", str(TEST_SWEEPS / "record_ranks.py"), "--project", "proj")
    assert result.returncode == 0, result.stderr
    # It names the server it chose and where the key came from, never the key.
    server = wandb_double.base_url
    expected = f"Backend: wandb (auto: logged in to W&B at {server}, key from WANDB_API_KEY)"
    assert expected in result.stdout
    assert wandb_double.api_key not in result.stdout + result.stderr
    (sweep,) = wandb_double.sweeps()
    entity, sweep_id = wandb_double.entity, sweep["id"]
    path = f"{entity}/proj/{sweep_id}"
    assert f"wbsweep agent {path}" in result.stdout

    one_line_error(wbsweep("best", f"{entity}/proj/zzzzzzzz"), 4, "zzzzzzzz", f"{entity}/proj")
    one_line_error(wbsweep("status", f"{entity}/other/{sweep_id}"), 4, f"{entity}/other")
    one_line_error(wbsweep("status", "not/a/valid/path"), 1, "entity/project/sweep_id")
    one_line_error(wbsweep("best", path), 5, "no finished run")


@pytest.mark.slow
def test_wandb_agent_keeps_going_after_a_failed_trial(
    wandb_double: WandbDouble, tmp_path: Path
) -> None:
    record = tmp_path / "records"
    record.mkdir()
    result = wbsweep(
        "create", str(TEST_SWEEPS / "grid12.py"), "--backend", "wandb", "--project", "g",
        "--json", WBSWEEP_TEST_GRID_LRS="0.001", WBSWEEP_TEST_GRID_BATCHES="16,8",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    path = json.loads(result.stdout)["sweep_id"]
    result = wbsweep(
        "agent", path, WBSWEEP_TEST_RECORD_DIR=str(record), WBSWEEP_TEST_FAIL_BATCH="16",
        WBSWEEP_TEST_WANDB="1", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    runs = wandb_double.runs(path.split("/")[-1])
    states = {r["config"]["per_device_train_batch_size"]: r["state"] for r in runs}
    assert states == {16: "failed", 8: "finished"}  # the grid goes 16, then 8
    status = json.loads(wbsweep("status", path, "--json").stdout)
    assert sorted(r["state"] for r in status["runs"]) == ["failed", "finished"]


@pytest.mark.parametrize("mode", ["--warm", "--cold"])
def test_ctrl_c_on_wandb_ends_the_trial_and_the_agent_quietly(
    wandb_double: WandbDouble, tmp_path: Path, mode: str
) -> None:
    """Ctrl-C to ``wbsweep agent`` on a W&B sweep: the training run ends (W&B: failed,
    as plain ``wandb agent`` leaves a run it interrupts), no other run starts, the
    agent exits 130 within its grace period without a traceback, and no process stays."""
    sweep = create_wandb("--n-trials", "2")
    record = tmp_path / "records"
    record.mkdir()
    agent = start_agent(sweep, record, mode, "--processes-per-trial", "2", WBSWEEP_TEST_SLEEP="0.3")
    ready = lambda: len(training_pids(record)) == 2  # noqa: E731
    out = signal_when(agent, ready, signal.SIGINT, 130, what="2 ranks to train")
    assert "Traceback" not in out, out
    runs = wandb_double.runs(sweep.split("/")[-1])
    assert len(runs) == 1, out + str([(r["id"], r["state"]) for r in runs])
    (run,) = runs
    assert run["state"] == "failed", out
    wait_for(lambda: not processes_mentioning(str(record)), 30, "every process to end")
