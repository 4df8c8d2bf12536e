"""The command line as a user drives it: exit codes, one-line errors, what is written.

In this process through click's ``CliRunner``. ``wbsweep agent`` with real
trials, through the console script, is in ``tests/e2e/test_cli_agent.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import SWEEPS, invoke, invoke_create, invoke_status

from wbsweep.errors import EXIT_BAD_INPUT


def store_file(tmp_path: Path) -> Path:
    return tmp_path / ".wbsweep" / "store.db"


def status_ids(tmp_path: Path) -> str:
    from wbsweep.backends.local import LocalBackend

    (sweep,) = LocalBackend(store_file(tmp_path)).sweeps()
    return sweep.id


def assert_one_line_error(stderr: str) -> None:
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr


def test_dry_run_prints_the_whole_config_and_registers_nothing(tmp_path: Path) -> None:
    result = invoke(
        "create", str(SWEEPS / "tiny.py"), "--dry-run", "--json",
        "--method", "bayes", "--n-trials", "6", "--direction", "maximize",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["method"] == "bayes"
    assert config["run_cap"] == 6
    assert config["metric"]["goal"] == "maximize"
    assert config["parameters"]["learning_rate"]["distribution"] == "log_uniform_values"
    assert config["command"][:4] == ["${env}", "${interpreter}", "-m", "wbsweep.launch"]
    assert "wbsweep.launch" in config["command"]
    assert config["command"][-1] == "${args_json_file}"
    assert not store_file(tmp_path).exists()


def test_create_prints_the_agent_command(tmp_path: Path) -> None:
    result = invoke("create", str(SWEEPS / "tiny.py"))
    assert result.exit_code == 0, result.stderr
    sweep_id = status_ids(tmp_path)
    assert f"wbsweep agent {sweep_id}" in result.stdout


def test_missing_sweep_file_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    result = invoke("create", str(tmp_path / "nope.py"))
    assert result.exit_code != 0
    assert "nope.py" in result.stderr
    assert_one_line_error(result.stderr)
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
    result = invoke("create", str(bad))
    assert result.exit_code != 0
    assert "hidden_dropout_prob" in result.stderr
    assert_one_line_error(result.stderr)
    assert not store_file(tmp_path).exists()


def test_unknown_sweep_and_no_best_yet(tmp_path: Path) -> None:
    result = invoke("status", "nosuchid")
    assert result.exit_code == 4 and "nosuchid" in result.stderr
    assert_one_line_error(result.stderr)
    sweep_id = invoke_create(SWEEPS / "tiny.py")
    result = invoke("best", sweep_id)
    assert result.exit_code == 5
    assert "no finished run" in result.stderr
    assert_one_line_error(result.stderr)
    assert invoke_status(sweep_id)["runs"] == []


def test_pause_resume_stop(tmp_path: Path) -> None:
    sweep_id = invoke_create(SWEEPS / "tiny.py")
    assert invoke("pause", sweep_id).exit_code == 0
    assert invoke_status(sweep_id)["state"] == "PAUSED"
    assert invoke("resume", sweep_id).exit_code == 0
    assert invoke("stop", sweep_id).exit_code == 0
    assert invoke_status(sweep_id)["state"] == "FINISHED"
    result = invoke("agent", sweep_id)
    assert result.exit_code == 0, result.stderr
    assert invoke_status(sweep_id)["runs"] == []


def test_store_flag_and_env_var_move_the_store(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "s.db"
    sweep_id = invoke_create(SWEEPS / "tiny.py", "--store", str(other))
    assert other.exists()
    assert not store_file(tmp_path).exists()
    assert invoke("status", sweep_id).exit_code == 4  # not in the default store
    assert invoke("status", sweep_id, WBSWEEP_STORE=str(other)).exit_code == 0


def test_debug_flag_shows_tracebacks_only_for_1_true_or_yes() -> None:
    invoke_create(SWEEPS / "tiny.py")  # a store, so the error is the unknown sweep
    for value in ("0", "false", "no", ""):
        result = invoke("status", "nosuchsweep", WBSWEEP_DEBUG=value)
        assert result.exit_code == 4
        assert_one_line_error(result.stderr)
    for value in ("1", "true", "YES"):
        result = invoke("status", "nosuchsweep", WBSWEEP_DEBUG=value)
        assert result.exit_code == 4
        assert "Traceback" in result.stderr and "SweepNotFoundError" in result.stderr


def test_bad_plan_is_a_bad_input_error() -> None:
    sweep_id = invoke_create(SWEEPS / "tiny.py")
    result = invoke("agent", sweep_id, "--workers", "0")
    assert result.exit_code == EXIT_BAD_INPUT
    assert "--workers must be at least 1" in result.stderr
    assert_one_line_error(result.stderr)
