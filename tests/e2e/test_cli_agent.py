"""`wbsweep agent` with real trials, as a user runs it: the console script, many workers.

Slow: each test runs the ``wbsweep agent`` console script and a dozen trial processes.
The sweep is created and read back in this process (``create`` and ``status`` are the
same CLI; their own tests are in ``tests/unit``): only the agent is what is under test.
The rest of the command line is tested in this process in ``tests/unit/test_cli.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import TEST_SWEEPS, invoke_create, invoke_status, wbsweep

pytestmark = pytest.mark.slow


def test_four_workers_share_a_twelve_point_grid(tmp_path: Path) -> None:
    """Concurrent workers (each its own process, claiming from one store) run every point once."""
    record = tmp_path / "records"
    record.mkdir()
    sweep_id = invoke_create(TEST_SWEEPS / "grid12.py")
    result = wbsweep(
        "agent", sweep_id, "--workers", "4", WBSWEEP_TEST_RECORD_DIR=str(record), timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    runs = invoke_status(sweep_id)["runs"]
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
    assert invoke_status(sweep_id)["state"] == "FINISHED"


def test_failing_trials_do_not_stop_the_sweep(tmp_path: Path) -> None:
    record = tmp_path / "records"
    record.mkdir()
    sweep_id = invoke_create(TEST_SWEEPS / "grid12.py")
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
    runs = invoke_status(sweep_id)["runs"]
    assert len(runs) == 12
    failed = [r for r in runs if r["state"] == "failed"]
    assert {r["params"]["per_device_train_batch_size"] for r in failed} == {16}
    assert len(failed) == 3 and {r["exit_code"] for r in failed} == {3}
    assert sum(r["state"] == "finished" for r in runs) == 9
    assert "failed" in result.stdout


def test_count_caps_the_trials_each_worker_runs(tmp_path: Path) -> None:
    record = tmp_path / "records"
    record.mkdir()
    sweep_id = invoke_create(TEST_SWEEPS / "grid12.py")
    result = wbsweep(
        "agent", sweep_id, "--workers", "2", "--count", "2",
        WBSWEEP_TEST_RECORD_DIR=str(record), timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    shown = invoke_status(sweep_id)
    assert [r["state"] for r in shown["runs"]] == ["finished"] * 4  # 2 workers x 2 trials
    assert shown["state"] == "RUNNING"  # the other 8 points wait for the next agent
