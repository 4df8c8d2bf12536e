"""A running trial's progress, the sweeps list and the logs, as every backend records them.

On the local store a trial's rank 0 reports through the run queue; on W&B it
writes the run's summary (``wbsweep/progress``) and config (``wbsweep/ran_as``,
``wbsweep/worker``), which here reach the W&B double the way the SDK sends them
(``UpsertBucket``, the file stream) over real HTTP.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import invoke, post_to_double
from rich.console import Console

from wbsweep.backends.base import Backend
from wbsweep.progress import render

WORKER = "contract-worker"  # what the local supplier claims as; a W&B trial says it
#: ``add_run(sweep_id, outcome, objective) -> run id`` (tests/backends/conftest.py)
AddRun = Callable[[str, str, "float | None"], str]


def _report(
    request: pytest.FixtureRequest, backend: Backend, sweep_id: str, run_id: str, progress: dict
) -> None:
    """What a trial's rank 0 sends while it trains: how it runs, and where it is."""
    ran_as = {"ranks": 2, "mixed_precision": "no"}
    queue = backend.queue
    if queue is not None:
        queue.record_started(run_id, ran_as)
        queue.record_progress(run_id, progress)
        return
    double = request.getfixturevalue("wandb_double")
    entity, project, _ = sweep_id.split("/")
    post_to_double(
        double,
        "/graphql",
        {
            "query": "mutation UpsertBucket($name: String, $project: String, $entity: String,"
            " $config: JSONString) { upsertBucket(input: {name: $name, modelName: $project,"
            " entityName: $entity, config: $config}) { bucket { id } } }",
            "variables": {
                "name": run_id,
                "project": project,
                "entity": entity,
                "config": json.dumps(
                    {"wbsweep/ran_as": {"value": ran_as}, "wbsweep/worker": {"value": WORKER}}
                ),
            },
        },
    )
    post_to_double(
        double,
        f"/files/{entity}/{project}/{run_id}/file_stream",
        {
            "files": {
                "wandb-summary.json": {
                    "offset": 0,
                    "content": [json.dumps({"wbsweep/progress": progress})],
                }
            }
        },
    )


def test_a_running_trials_progress_reaches_runs_and_the_live_view(
    request: pytest.FixtureRequest, backend: Backend, add_run: AddRun, sweep_config: dict
) -> None:
    sweep_id = backend.create(sweep_config)
    finished = add_run(sweep_id, "finished", 0.25)
    running = add_run(sweep_id, "running", None)
    started = time.time() - 30
    progress = {"step": 12, "total": 48, "at": time.time(), "started_at": started}
    _report(request, backend, sweep_id, running, {**progress, "eval": 0.4, "eval_step": 10})

    runs = {run.id: run for run in backend.runs(sweep_id)}
    live = runs[running]
    assert live.progress["step"] == 12 and live.progress["total"] == 48
    assert live.progress["eval"] == 0.4 and live.worker == WORKER
    assert live.started_at is not None and live.ran_as["ranks"] == 2

    console = Console(record=True, force_terminal=True, width=140, color_system=None)
    sweep = backend.sweep(sweep_id)
    console.print(render(sweep, list(runs.values()), [WORKER], now=started + 75))
    text = console.export_text()
    assert "1 finished, 1 running, 0 failed of 8" in text  # the grid's 8 points
    assert re.search(rf"best objective 0\.25\s+run {finished}", text)
    assert re.search(rf"{WORKER}\s+run {running}\s+.*12/48\s+objective 0\.4 @ 10", text)


def test_sweeps_lists_what_the_backend_holds(backend: Backend, sweep_config: dict) -> None:
    first = backend.create(sweep_config)
    second = backend.create({**sweep_config, "method": "random"})
    listed = {record.id: record for record in backend.sweeps()}
    assert {first, second} <= set(listed)
    assert listed[second].config["method"] == "random"
    assert listed[first].state == "RUNNING"


def test_the_log_of_a_wandb_run_is_its_workers_output(
    request: pytest.FixtureRequest, backend: Backend, add_run: AddRun, sweep_config: dict
) -> None:
    if backend.queue is not None:
        pytest.skip("the local store keeps each trial's own log (tests/unit/test_status_cli.py)")
    sweep_id = backend.create(sweep_config)
    running = add_run(sweep_id, "running", None)
    _report(request, backend, sweep_id, running, {"step": 1, "total": 2, "at": time.time()})
    log = Path(backend.worker_log(sweep_id, WORKER))  # where `wbsweep agent --progress` put it
    log.parent.mkdir(parents=True)
    log.write_text(f"wandb: Agent Starting Run: {running}\nstep 1\n")
    result = invoke("logs", sweep_id, running)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == log.read_text()
    result = invoke("logs", sweep_id, "nosuchrun")
    assert result.exit_code == 4 and "no run 'nosuchrun'" in result.stderr


def test_status_puts_the_best_run_first_and_marks_it(
    request: pytest.FixtureRequest, backend: Backend, add_run: AddRun, sweep_config: dict
) -> None:
    sweep_id = backend.create(sweep_config)  # minimize
    worse = add_run(sweep_id, "finished", 0.75)
    running = add_run(sweep_id, "running", None)
    better = add_run(sweep_id, "finished", 0.5)
    failed = add_run(sweep_id, "failed", None)
    _report(request, backend, sweep_id, running, {"step": 3, "total": 9, "at": time.time()})
    # The local supplier's store is not the default one; a W&B path needs no store.
    store = ("--store", str(getattr(backend, "path", "unused.db")))
    result = invoke("status", sweep_id, *store)
    assert result.exit_code == 0, result.stderr
    rows = result.stdout.splitlines()[2:6]
    assert [row.split()[0] for row in rows] == [better, worse, running, failed]
    assert rows[0].startswith(f"{better} *  finished  0.5")
    assert "3/9" in rows[2] and re.search(r"\s2\s", rows[2])  # its step, its 2 ranks
    shown = json.loads(invoke("status", sweep_id, "--json", *store).stdout)
    assert {run["id"]: run["progress"].get("step") for run in shown["runs"]}[running] == 3
