"""The command line as a user drives it: exit codes, one-line errors, what is written."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import SWEEPS, TEST_SWEEPS, create, status, wbsweep


def store_file(tmp_path: Path) -> Path:
    return tmp_path / ".wbsweep" / "store.db"


def test_dry_run_prints_the_whole_config_and_registers_nothing(tmp_path: Path) -> None:
    result = wbsweep(
        "create",
        str(SWEEPS / "tiny.py"),
        "--dry-run",
        "--json",
        "--method",
        "bayes",
        "--n-trials",
        "6",
        "--direction",
        "maximize",
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["method"] == "bayes"
    assert config["run_cap"] == 6
    assert config["metric"]["goal"] == "maximize"
    assert config["parameters"]["learning_rate"]["distribution"] == "log_uniform_values"
    assert config["command"][:3] == ["${env}", "accelerate", "launch"]
    assert "wbsweep.trial" in config["command"]
    assert config["command"][-1] == "${args_json_file}"
    assert not store_file(tmp_path).exists()


def test_create_prints_the_agent_command(tmp_path: Path) -> None:
    result = wbsweep("create", str(SWEEPS / "tiny.py"))
    assert result.returncode == 0, result.stderr
    sweep_id = status_ids(tmp_path)
    assert f"wbsweep agent {sweep_id}" in result.stdout


def status_ids(tmp_path: Path) -> str:
    from wbsweep.backends.local import LocalBackend

    (sweep,) = LocalBackend(store_file(tmp_path)).sweeps()
    return sweep.id


def test_missing_sweep_file_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    result = wbsweep("create", str(tmp_path / "nope.py"))
    assert result.returncode != 0
    assert "nope.py" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not store_file(tmp_path).exists()


def test_bad_space_is_one_line_naming_the_parameter(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        (SWEEPS / "tiny.py")
        .read_text()
        .replace(
            'trial.suggest_float("hidden_dropout_prob", 0.0, 0.3)',
            'trial.suggest_float("hidden_dropout_prob", 0.5, 0.1)',
        )
    )
    result = wbsweep("create", str(bad))
    assert result.returncode != 0
    assert "hidden_dropout_prob" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not store_file(tmp_path).exists()


def test_unknown_sweep_and_no_best_yet(tmp_path: Path) -> None:
    result = wbsweep("status", "nosuchid")
    assert result.returncode == 4 and "nosuchid" in result.stderr
    sweep_id = create(SWEEPS / "tiny.py")
    result = wbsweep("best", sweep_id)
    assert result.returncode == 5
    assert "no finished run" in result.stderr
    assert status(sweep_id)["runs"] == []


def test_pause_resume_stop(tmp_path: Path) -> None:
    sweep_id = create(SWEEPS / "tiny.py")
    assert wbsweep("pause", sweep_id).returncode == 0
    assert status(sweep_id)["state"] == "PAUSED"
    assert wbsweep("resume", sweep_id).returncode == 0
    assert wbsweep("stop", sweep_id).returncode == 0
    assert status(sweep_id)["state"] == "FINISHED"
    result = wbsweep("agent", sweep_id)
    assert result.returncode == 0
    assert status(sweep_id)["runs"] == []


def test_store_flag_and_env_var_move_the_store(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "s.db"
    sweep_id = create(SWEEPS / "tiny.py", "--store", str(other))
    assert other.exists()
    assert wbsweep("status", sweep_id).returncode == 4  # not in the default store
    assert wbsweep("status", sweep_id, WBSWEEP_STORE=str(other)).returncode == 0


def test_eight_workers_share_a_twelve_point_grid(tmp_path: Path) -> None:
    record = tmp_path / "records"
    record.mkdir()
    sweep_id = create(TEST_SWEEPS / "grid12.py")
    result = wbsweep(
        "agent", sweep_id, "--workers", "8", WBSWEEP_TEST_RECORD_DIR=str(record), timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    runs = status(sweep_id)["runs"]
    assert len(runs) == 12
    assert {r["state"] for r in runs} == {"finished"}
    points = {
        (r["params"]["learning_rate"], r["params"]["per_device_train_batch_size"]) for r in runs
    }
    assert len(points) == 12
    assert len({r["worker"] for r in runs}) > 1
    # Every run's command really ran, with that run's params.
    for run in runs:
        seen = json.loads((record / f"{run['id']}.json").read_text())
        assert seen["params"] == run["params"]
    assert status(sweep_id)["state"] == "FINISHED"


def test_failing_trials_do_not_stop_the_sweep(tmp_path: Path) -> None:
    record = tmp_path / "records"
    record.mkdir()
    sweep_id = create(TEST_SWEEPS / "grid12.py")
    result = wbsweep(
        "agent",
        sweep_id,
        "--workers",
        "2",
        WBSWEEP_TEST_RECORD_DIR=str(record),
        WBSWEEP_TEST_FAIL_BATCH="16",
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    runs = status(sweep_id)["runs"]
    assert len(runs) == 12
    failed = [r for r in runs if r["state"] == "failed"]
    assert {r["params"]["per_device_train_batch_size"] for r in failed} == {16}
    assert len(failed) == 3 and {r["exit_code"] for r in failed} == {3}
    assert sum(r["state"] == "finished" for r in runs) == 9
    assert "failed" in result.stdout
