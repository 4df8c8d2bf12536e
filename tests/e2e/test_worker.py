"""The CLI worker over the run loop: heartbeats while a trial runs, and the trial's log.

The trial here is a hand-written sweep ``command`` (as a whole W&B sweep config
may carry), so no training is needed to see what the worker does around it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from wbsweep import worker as worker_module
from wbsweep.backends.local import LocalBackend
from wbsweep.states import RunState

pytestmark = pytest.mark.slow


def sweep_running(store: LocalBackend, code: str) -> str:
    return store.create(
        {
            "method": "grid",
            "metric": {"name": "objective", "goal": "minimize"},
            "parameters": {"x": {"values": [1]}},
            "command": [sys.executable, "-c", code, "${args_json_file}"],
        }
    )


def test_a_running_trial_heartbeats_and_its_log_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "_CANCEL_POLL", 0.2)
    store = LocalBackend(tmp_path / "store.db")
    code = "import sys, time; print('params in', sys.argv[1]); time.sleep(2)"
    sweep_id = sweep_running(store, code)
    lines: list[str] = []

    outcomes = worker_module.Worker(store, sweep_id, name="w0", log=lines.append).run()

    (run,) = store.runs(sweep_id)
    assert [o.state for o in outcomes] == [RunState.FINISHED] == [run.state]
    assert run.heartbeat_at is not None and run.claimed_at is not None
    assert run.heartbeat_at - run.claimed_at >= 1.0  # beat while the trial ran, not only at claim
    log = Path(store.work_dir(sweep_id)) / f"run-{run.id}.log"
    assert "params in" in log.read_text() and f"config-{run.id}.json" in log.read_text()
    assert any(f"run {run.id} finished" in line for line in lines)
    assert store.sweep(sweep_id).state == "FINISHED"


def test_a_failed_trial_shows_the_end_of_its_log(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "store.db")
    sweep_id = sweep_running(store, "import sys; print('the reason it failed'); sys.exit(3)")
    lines: list[str] = []

    worker_module.Worker(store, sweep_id, name="w0", log=lines.append).run()

    (run,) = store.runs(sweep_id)
    assert run.state == RunState.FAILED and run.exit_code == 3
    shown = "\n".join(lines)
    assert "failed: exit 3" in shown and "the reason it failed" in shown
