"""Backend suppliers: every test in ``tests/backends`` runs once per backend.

As Optuna's ``StorageSupplier``: a supplier makes a ready backend and knows how
to put a run into it the way that backend's workers do. Adding a backend is
writing its supplier and one line in :data:`SUPPLIERS`.

* ``local`` — a fresh SQLite file under ``tmp_path``; runs are claimed and
  recorded through its own run queue.
* ``wandb`` — :class:`WandbBackend` against the W&B test double; runs are made
  as a ``wandb agent`` and its trial would make them (``CreateAgent``,
  ``Heartbeat`` for the server's choice, ``UpsertBucket`` from the trial, the
  file stream's summary and exit code), over plain HTTP: no agent process.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import post_to_double
from wandb_double import WandbDouble

from wbsweep.backends.base import Backend, RunEnd

#: Rows of a run's history, or none.
Rows = list[dict[str, Any]] | None
#: How a test wants a run to end: ``running`` (not yet), ``finished``, ``failed``, ``stopped``.
Outcome = str
#: ``add_run(sweep_id, outcome, objective, history=None) -> run id``; ``history`` is the
#: rows the trial logged before it ended (``{"_step": step, **metrics}``).
AddRun = Callable[..., str]

#: A sweep config as ``wbsweep create`` registers one (grid: the runs are known in advance).
CONFIG: dict[str, Any] = {
    "program": "sweeps/contract.py",
    "method": "grid",
    "metric": {"name": "objective", "goal": "minimize"},
    "parameters": {"a": {"values": [1, 2, 3, 4, 5, 6, 7, 8]}, "b": {"value": "x"}},
    "command": ["${env}", "${interpreter}", "${program}", "${args_json_file}"],
}


@dataclass
class Supplied:
    """A ready backend, a sweep id it does not have, and how to add runs to a sweep."""

    backend: Backend
    missing_sweep_id: str
    add_run: AddRun
    #: A fresh instance over the same state, as another process would open it (picklable).
    reopen: Callable[[], Backend]


@dataclass(frozen=True)
class Supplier:
    name: str
    make: Callable[[pytest.FixtureRequest, Path], Supplied]
    #: Whether wbsweep hands out this backend's runs (``Backend.queue`` is not ``None``).
    has_queue: bool


# -- local --------------------------------------------------------------------------------


def _local(request: pytest.FixtureRequest, tmp_path: Path) -> Supplied:
    from wbsweep.backends.local import LocalBackend

    path = tmp_path / "contract" / "store.db"
    backend = LocalBackend(path)

    def add_run(
        sweep_id: str, outcome: Outcome, objective: float | None, history: Rows = None
    ) -> str:
        queue = backend.queue
        run = queue.claim_next(sweep_id, "contract-worker")
        assert run is not None, "the sweep handed out no run"
        for row in history or []:
            queue.record_history(run.id, row["_step"], row)
        if objective is not None:
            queue.record_result(run.id, objective, {"eval_loss": objective})
        if outcome != "running":
            code = {"finished": 0, "failed": 1, "stopped": 143}[outcome]
            queue.finish_run(run.id, RunEnd(code, stopped=outcome == "stopped"))
        return run.id

    return Supplied(backend, "nosuchid", add_run, functools.partial(LocalBackend, path))


# -- wandb --------------------------------------------------------------------------------

_CREATE_AGENT = """mutation CreateAgent($host: String!, $projectName: String,
  $entityName: String, $sweep: String!) {
  createAgent(input: {host: $host, projectName: $projectName, entityName: $entityName,
    sweep: $sweep}) { agent { id } }
}"""
_HEARTBEAT = """mutation Heartbeat($id: ID!, $metrics: JSONString, $runState: JSONString) {
  agentHeartbeat(input: {id: $id, metrics: $metrics, runState: $runState}) {
    agent { id } commands }
}"""
_UPSERT_BUCKET = """mutation UpsertBucket($name: String, $project: String, $entity: String,
  $sweep: String, $config: JSONString) {
  upsertBucket(input: {name: $name, modelName: $project, entityName: $entity,
    sweep: $sweep, config: $config}) { bucket { id name } inserted }
}"""


def _graphql(double: WandbDouble, query: str, **variables: Any) -> dict[str, Any]:
    return dict(
        post_to_double(double, "/graphql", {"query": query, "variables": variables})["data"]
    )


def _wandb(request: pytest.FixtureRequest, tmp_path: Path) -> Supplied:
    from wbsweep.backends.wandb import WandbBackend

    double: WandbDouble = request.getfixturevalue("wandb_double")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    # wandb.agent (drive) asks for the next run 5 s after the last one ended.
    monkeypatch.setattr("wandb.agents.pyagent.Agent.HEARTBEAT_SLEEP_SECONDS", 0.2)
    # wandb.agent (drive) exports WANDB_PROJECT and friends for good: undo that.
    before = dict(os.environ)
    request.addfinalizer(lambda: (os.environ.clear(), os.environ.update(before)))
    backend = WandbBackend()

    def add_run(
        sweep_id: str, outcome: Outcome, objective: float | None, history: Rows = None
    ) -> str:
        metric = backend.sweep(sweep_id).metric_name
        entity, project, sweep = sweep_id.split("/")
        agent = _graphql(
            double,
            _CREATE_AGENT,
            host="contract",
            entityName=entity,
            projectName=project,
            sweep=sweep,
        )["createAgent"]["agent"]["id"]
        answer = _graphql(double, _HEARTBEAT, id=agent, metrics="{}", runState="{}")
        commands = json.loads(answer["agentHeartbeat"]["commands"])
        (command,) = [c for c in commands if c["type"] == "run"]
        run_id = command["run_id"]
        # The trial's own run: its config holds more than the sweep's parameters.
        config = {
            **command["args"],
            "learning_rate_schedule": {"value": "linear"},
            "_wandb": {"value": {"cli_version": "0.31.0"}},
        }
        _graphql(
            double,
            _UPSERT_BUCKET,
            name=run_id,
            project=project,
            entity=entity,
            sweep=sweep,
            config=json.dumps(config),
        )
        if outcome == "running":
            return run_id
        if outcome == "stopped":
            double.stop_run(run_id)
        summary = {} if objective is None else {metric: objective}
        files = {"wandb-summary.json": {"offset": 0, "content": [json.dumps(summary)]}}
        if history:
            # As the SDK streams it: one JSON line per logged step, W&B's own keys added.
            lines = [json.dumps({**row, "_runtime": 1.0, "_timestamp": 0.0}) for row in history]
            files["wandb-history.jsonl"] = {"offset": 0, "content": lines}
        post_to_double(
            double,
            f"/files/{entity}/{project}/{run_id}/file_stream",
            {
                "files": files,
                "complete": True,
                "exitcode": {"finished": 0, "failed": 1, "stopped": 143}[outcome],
            },
        )
        return run_id

    missing = f"{backend.entity}/wbsweep/nosuchid"
    return Supplied(backend, missing, add_run, WandbBackend)


#: Every backend the contract suite runs over.
SUPPLIERS = [
    Supplier("local", _local, has_queue=True),
    Supplier("wandb", _wandb, has_queue=False),
]


@pytest.fixture(params=SUPPLIERS, ids=lambda s: s.name)
def supplied(request: pytest.FixtureRequest, tmp_path: Path) -> Supplied:
    """A ready backend of each kind, with a way to add runs to its sweeps."""
    supplier: Supplier = request.param
    made = supplier.make(request, tmp_path)
    assert (made.backend.queue is not None) == supplier.has_queue
    return made


@pytest.fixture(params=[s for s in SUPPLIERS if s.has_queue], ids=lambda s: s.name)
def queued(request: pytest.FixtureRequest, tmp_path: Path) -> Supplied:
    """A ready backend of each kind whose run queue wbsweep owns."""
    return request.param.make(request, tmp_path)


@pytest.fixture
def backend(supplied: Supplied) -> Backend:
    """Each backend, ready and empty."""
    return supplied.backend


@pytest.fixture
def add_run(supplied: Supplied) -> AddRun:
    """``add_run(sweep_id, outcome, objective) -> run id``, as the backend's workers would."""
    return supplied.add_run


@pytest.fixture
def missing_sweep_id(supplied: Supplied) -> str:
    """A well-formed id of a sweep the backend does not have."""
    return supplied.missing_sweep_id


@pytest.fixture
def reopen(supplied: Supplied) -> Callable[[], Backend]:
    """A new instance over the same state, as another process would open it."""
    return supplied.reopen


@pytest.fixture
def queue_backend(queued: Supplied) -> Backend:
    """Each backend whose ``queue`` wbsweep owns."""
    return queued.backend


@pytest.fixture
def queue_reopen(queued: Supplied) -> Callable[[], Backend]:
    """``queue_backend`` opened anew (picklable: workers in other processes call it)."""
    return queued.reopen


@pytest.fixture
def sweep_config() -> dict[str, Any]:
    """A sweep config as ``wbsweep create`` registers one (a fresh copy)."""
    return copy.deepcopy(CONFIG)
