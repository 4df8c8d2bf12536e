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
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from helpers import (
    TEST_SWEEPS,
    WBSWEEP,
    create_wandb,
    processes_mentioning,
    rank_records,
    wait_for,
    wbsweep,
)
from wandb_double import WandbDouble

pytestmark = pytest.mark.slow

SECRET_SCAN_SKIP = {".db", ".wandb"}


def assert_key_never_written(key: str, root: Path, *outputs: str) -> None:
    for text in outputs:
        assert key not in text
    for path in root.rglob("*"):
        if path.is_file() and path.suffix not in SECRET_SCAN_SKIP:
            assert key.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_sweep_on_wandb_two_agents_two_ranks_and_best(
    wandb_double: WandbDouble, tmp_path: Path
) -> None:
    record = tmp_path / "records"
    record.mkdir()
    path = create_wandb("--n-trials", "3", "--method", "random")
    entity, project, sweep_id = path.split("/")
    assert (entity, project) == (wandb_double.entity, "proj")
    command = wandb_double.sweep(sweep_id)["config"]["command"]
    assert command[1:4] == ["${interpreter}", "-m", "wbsweep.launch"]

    result = wbsweep(
        "agent", path, "--workers", "2", "--processes-per-trial", "2",
        WBSWEEP_TEST_RECORD_DIR=str(record), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr

    runs = wandb_double.runs(sweep_id)
    assert len(runs) == 3
    assert [r["state"] for r in runs] == ["finished"] * 3
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
        mine = [
            b for b in rank_records(record)
            if b["event"] == "train_begin" and b["output_dir"].endswith(f"run-{run['id']}")
        ]  # fmt: skip
        assert sorted(b["process_index"] for b in mine) == [0, 1]
        for b in mine:
            assert b["learning_rate"] == pytest.approx(swept_lr)
    # Only rank 0 made a run: one W&B run per trial, no stray ones.
    assert len(wandb_double.runs()) == 3
    # Each run is named for the sweep and its number in it, and tagged with the backend
    # and the host that ran it.
    assert sorted(r["display_name"] for r in runs) == [f"{sweep_id}-{n}" for n in (1, 2, 3)]
    assert [r["tags"] for r in runs] == [["wandb", socket.gethostname()]] * 3

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
    assert [r["state"] for r in status["runs"]] == ["finished"] * 3
    # The sweep records 1 rank per trial; this agent's explicit flag ran 2, and each run says so.
    assert status["trial_shape"]["ranks"] == 1
    for run in status["runs"]:
        assert run["ran_as"] == {"ranks": 2, "mixed_precision": "no", "override": True,
                                 "warm": True}  # fmt: skip
    assert_key_never_written(wandb_double.api_key, tmp_path, result.stdout, result.stderr)


def trial_processes(record: Path) -> list[tuple[int, str]]:
    return [p for p in processes_mentioning(str(record)) if "wbsweep.trial" in p[1]]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["server-stop", "cancel"])
def test_stopping_a_running_two_rank_trial_leaves_no_rank(
    wandb_double: WandbDouble, tmp_path: Path, how: str
) -> None:
    record = tmp_path / "records"
    record.mkdir()
    path = create_wandb("--n-trials", "1")
    sweep_id = path.split("/")[-1]
    env = {**os.environ, "WBSWEEP_TEST_RECORD_DIR": str(record), "WBSWEEP_TEST_SLEEP": "0.3"}
    agent = subprocess.Popen(
        # Cold: a trial's own processes, which a stop must end (warm ranks outlive trials).
        [WBSWEEP, "agent", path, "--processes-per-trial", "2", "--cold"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(
            lambda: len({r["pid"] for r in rank_records(record) if r["event"] == "step"}) == 2,
            180, "both ranks to train",
        )  # fmt: skip
        assert len(trial_processes(record)) >= 2
        (run,) = wandb_double.runs(sweep_id)
        if how == "server-stop":
            wandb_double.stop_run(run["id"])  # what hyperband or the stop button sends
        else:
            result = wbsweep("cancel", path)
            assert result.returncode == 0, result.stderr
        wait_for(lambda: not trial_processes(record), 90, "every rank to end")
        wait_for(lambda: wandb_double.run(run["id"])["state"] != "running", 60, "the run to end")
        agent.wait(timeout=120)
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=60)
    assert wandb_double.run(run["id"])["state"] == "killed"
    status = json.loads(wbsweep("status", path, "--json").stdout)
    assert status["runs"][0]["state"] == "stopped"
    assert processes_mentioning(str(record)) == []


def test_auto_picks_wandb_when_logged_in_and_says_so(wandb_double: WandbDouble) -> None:
    result = wbsweep("create", str(TEST_SWEEPS / "record_ranks.py"), "--project", "p")
    assert result.returncode == 0, result.stderr
    # It names the server it chose and where the key came from, never the key.
    server = wandb_double.base_url
    expected = f"Backend: wandb (auto: logged in to W&B at {server}, key from WANDB_API_KEY)"
    assert expected in result.stdout
    assert wandb_double.api_key not in result.stdout + result.stderr
    (sweep,) = wandb_double.sweeps()
    assert f"wbsweep agent {wandb_double.entity}/p/{sweep['id']}" in result.stdout


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


def test_sweep_not_found_and_wrong_project(wandb_double: WandbDouble) -> None:
    path = create_wandb()
    entity, _, sweep_id = path.split("/")
    one_line_error(wbsweep("best", f"{entity}/proj/zzzzzzzz"), 4, "zzzzzzzz", f"{entity}/proj")
    one_line_error(wbsweep("status", f"{entity}/other/{sweep_id}"), 4, f"{entity}/other")
    one_line_error(wbsweep("status", "not/a/valid/path"), 1, "entity/project/sweep_id")
    one_line_error(wbsweep("best", path), 5, "no finished run")


@pytest.mark.slow
def test_a_bare_sweep_id_with_wandb_agents_flags_or_environment_is_the_w_and_b_sweep(
    wandb_double: WandbDouble, tmp_path: Path
) -> None:
    path = create_wandb("--n-trials", "3")
    entity, project, bare = path.split("/")
    # As `wandb agent -p PROJECT -e ENTITY ID --count 1`: one trial, then the agent leaves.
    ran = wbsweep(
        "agent", bare, "-p", project, "-e", entity, "--count", "1",
        "--store", str(tmp_path / "no-store.db"),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert [r["state"] for r in wandb_double.runs(bare)] == ["finished"]
    assert not (tmp_path / "no-store.db").exists()
    # As `wandb agent ID` with WANDB_PROJECT set: the local store does not know the id.
    shown = wbsweep("status", bare, "--json", WANDB_PROJECT=project, WANDB_ENTITY=entity)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["sweep_id"] == path


@pytest.mark.slow
def test_wandb_agent_keeps_going_after_a_failed_trial(
    wandb_double: WandbDouble, tmp_path: Path
) -> None:
    record = tmp_path / "records"
    record.mkdir()
    result = wbsweep(
        "create", str(TEST_SWEEPS / "grid12.py"), "--backend", "wandb", "--project", "g",
        "--json", WBSWEEP_TEST_GRID_LRS="0.001", WBSWEEP_TEST_GRID_BATCHES="16,8,32",
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
    assert states == {16: "failed", 8: "finished", 32: "finished"}
    status = json.loads(wbsweep("status", path, "--json").stdout)
    assert sorted(r["state"] for r in status["runs"]) == ["failed", "finished", "finished"]
