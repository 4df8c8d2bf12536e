"""What the W&B test double does for each write the SDK sends.

Mutations (``UpsertSweep``, ``CreateAgent``, ``Heartbeat``, ``UpsertBucket``,
``CreateRunFiles``...) and the run file stream.  Each function takes the
double, runs with its lock held and gets the GraphQL ``input`` as a dict.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import yaml

from ._graphql import GraphQLError
from ._store import TERMINAL_STATES, Agent, Run, Sweep, loads_json, new_name

if TYPE_CHECKING:
    from ._double import WandbDouble


def upsert_sweep(d: WandbDouble, data: dict[str, Any]) -> dict[str, Any]:
    sweep_ref = data.get("id")
    if sweep_ref:
        sweep = sweep_by_ref(d, str(sweep_ref))
        if sweep is None:
            raise GraphQLError(f"sweep {sweep_ref} not found")
        if data.get("config"):
            sweep.config_yaml = str(data["config"])
        if data.get("displayName"):
            sweep.display_name = str(data["displayName"])
        if data.get("state"):
            d._set_state(sweep, str(data["state"]).upper())
        sweep.updated_at = time.time()
    else:
        config_yaml = data.get("config")
        if not config_yaml:
            raise GraphQLError("a new sweep needs a config")
        try:
            config = yaml.safe_load(str(config_yaml))
        except yaml.YAMLError as exc:
            raise GraphQLError(f"invalid sweep config: {exc}") from exc
        if not isinstance(config, dict):
            raise GraphQLError("invalid sweep config: not a mapping")
        entity = str(data.get("entityName") or d.entity)
        project = str(data.get("projectName") or config.get("project") or "uncategorized")
        name = new_name()
        while name in d._sweeps:
            name = new_name()
        sweep = Sweep(
            seq=d._next_seq(),
            name=name,
            entity=entity,
            project=project,
            config_yaml=str(config_yaml),
            state=str(data.get("state") or "RUNNING").upper(),
            display_name=data.get("displayName"),
            description=data.get("description"),
            controller=loads_json(data.get("controller"), None),
            scheduler=loads_json(data.get("scheduler"), None),
            prior_runs_filters=loads_json(data.get("priorRunsFilters"), None),
        )
        d._project(entity, project)
        d._sweeps[name] = sweep
    d._changed.notify_all()
    return {
        "sweep": d._schema.sweep(sweep),
        "configValidationWarnings": [],
        "inserted": not sweep_ref,
    }


def sweep_by_ref(d: WandbDouble, ref: str) -> Sweep | None:
    """The SDK names a sweep by its GraphQL ``id`` (state changes) or its name."""
    for sweep in d._sweeps.values():
        if ref in (sweep.gql_id, sweep.name):
            return sweep
    return None


def create_agent(d: WandbDouble, data: dict[str, Any]) -> dict[str, Any]:
    sweep = sweep_by_ref(d, str(data.get("sweep") or ""))
    if sweep is None:
        raise GraphQLError(f"sweep {data.get('sweep')!r} not found", status=404)
    agent = Agent(d._next_seq(), sweep.name, sweep.entity, sweep.project, data.get("host"))
    d._agents_by_id[agent.gql_id] = agent
    d._changed.notify_all()
    return {"agent": d._schema.agent(agent)}


def agent_heartbeat(d: WandbDouble, data: dict[str, Any]) -> dict[str, Any]:
    from ._engine import heartbeat_commands

    agent = d._agents_by_id.get(str(data.get("id") or ""))
    if agent is None or agent.sweep not in d._sweeps:
        raise GraphQLError("agent or sweep not found", status=404)
    commands = heartbeat_commands(d, agent, loads_json(data.get("runState"), {}))
    d.commands.extend((agent.gql_id, c) for c in commands)
    d._changed.notify_all()
    return {"agent": d._schema.agent(agent), "commands": json.dumps(commands)}


def upsert_model(d: WandbDouble, data: dict[str, Any]) -> dict[str, Any]:
    entity = str(data.get("entityName") or d.entity)
    project = d._project(entity, str(data.get("name") or "uncategorized"))
    return {
        "model": d._schema.project(project),
        "project": d._schema.project(project),
        "inserted": True,
    }


def upsert_bucket(d: WandbDouble, data: dict[str, Any]) -> dict[str, Any]:
    name = str(data.get("name") or data.get("id") or new_name())
    run = d._runs.get(name)
    inserted = run is None
    if run is None:
        entity = str(data.get("entityName") or data.get("entity") or d.entity)
        project = str(data.get("modelName") or data.get("project") or "uncategorized")
        run = Run(d._next_seq(), name, entity, project)
        d._runs[name] = run
        d._project(entity, project)
    elif data.get("project") or data.get("modelName"):
        run.project = str(data.get("modelName") or data.get("project"))
        run.entity = str(data.get("entityName") or data.get("entity") or run.entity)
        d._project(run.entity, run.project)
    if data.get("sweep") and not run.sweep:
        run.sweep = str(data["sweep"])
    config = loads_json(data.get("config"), None)
    if isinstance(config, dict):
        run.config.update(config)
    summary = loads_json(data.get("summaryMetrics"), None)
    if isinstance(summary, dict):
        run.summary.update(summary)
    for key, attr in (
        ("displayName", "display_name"),
        ("groupName", "group"),
        ("jobType", "job_type"),
        ("notes", "notes"),
        ("host", "host"),
        ("jobProgram", "program"),
        ("commit", "commit"),
    ):
        if data.get(key) is not None:
            setattr(run, attr, data[key])
    if data.get("tags") is not None:
        run.tags = list(data["tags"])
    if data.get("description") is not None:
        run.notes = data["description"]
    mark_started(d, run)
    d._changed.notify_all()
    return {"bucket": d._schema.run(run), "inserted": inserted, "updateAvailable": False}


def new_sweep_run(d: WandbDouble, sweep: Sweep, agent: Agent, config: dict[str, Any]) -> Run:
    """A pending run the engine proposed, handed to ``agent``."""
    name = new_name()
    while name in d._runs:
        name = new_name()
    run = Run(
        d._next_seq(),
        name,
        sweep.entity,
        sweep.project,
        sweep=sweep.name,
        config=dict(config),
        agent=agent.gql_id,
        sweep_args=dict(config),
    )
    d._runs[name] = run
    agent.runs.append(name)
    return run


def mark_started(d: WandbDouble, run: Run) -> None:
    """The run's own process spoke: a pending (or re-attached) run is running."""
    run.started = True
    run.updated_at = run.heartbeat_at = time.time()
    if run.state == "pending" or (run.state == "crashed" and not run.completed):
        run.state = "running"
    if run.preempting and run.state == "running":
        run.state = "preempting"


def create_run_files(d: WandbDouble, data: dict[str, Any]) -> dict[str, Any]:
    entity = str(data.get("entityName") or data.get("entity") or d.entity)
    project = str(data.get("projectName") or data.get("project") or "uncategorized")
    run_name = str(data.get("runName") or data.get("run") or "")
    run = d._runs.get(run_name)
    files = []
    for fname in data.get("files") or []:
        url = f"{d.base_url}/upload/{entity}/{project}/{run_name}/{fname}"
        files.append({"name": fname, "uploadUrl": url, "directUrl": url})
    return {
        "runID": run.gql_id if run else run_name,
        "uploadHeaders": [],
        "files": files,
    }


def stop_run_mutation(d: WandbDouble, data: dict[str, Any]) -> dict[str, Any]:
    for run in d._runs.values():
        if data.get("id") in (run.gql_id, run.name):
            d.stop_run(run.name)
            return {"success": True, "clientMutationId": None}
    raise GraphQLError("run not found")


# ------------------------------------------------------------ requests


def file_stream(
    d: WandbDouble, entity: str, project: str, run_name: str, body: dict[str, Any]
) -> dict[str, Any]:
    run = d._runs.get(run_name)
    if run is None:
        run = Run(d._next_seq(), run_name, entity, project)
        d._runs[run_name] = run
        d._project(entity, project)
    mark_started(d, run)
    if body.get("preempting") and run.state not in TERMINAL_STATES:
        run.preempting = True
        run.state = "preempting"
    for fname, chunk in (body.get("files") or {}).items():
        offset = int(chunk.get("offset") or 0)
        lines = [str(x) for x in chunk.get("content") or []]
        if fname == "wandb-history.jsonl":
            rows = [json.loads(line) for line in lines]
            run.history[offset : offset + len(rows)] = rows
        elif fname == "wandb-summary.json":
            if lines:
                run.summary = json.loads(lines[-1])
        elif fname == "wandb-events.jsonl":
            rows = [json.loads(line) for line in lines]
            run.events[offset : offset + len(rows)] = rows
        elif fname == "output.log":
            run.output[offset : offset + len(lines)] = lines
    if body.get("complete"):
        exitcode = body.get("exitcode")
        run.completed = True
        run.completed_at = time.time()
        run.exitcode = int(exitcode) if exitcode is not None else None
        if run.should_stop:
            run.state = "killed"
        elif not exitcode:
            run.state = "finished"
        elif run.preempting:
            run.state = "preempted"  # handed out again: see _engine.next_command
        else:
            run.state = "failed"
    d._changed.notify_all()
    return {"exitcode": None, "limits": {}}


def upload(d: WandbDouble, path: str, data: bytes) -> None:
    parts = path.split("/", 5)  # "", "upload", entity, project, run, file
    if len(parts) == 6 and parts[4] in d._runs:
        d._runs[parts[4]].files[parts[5]] = data
