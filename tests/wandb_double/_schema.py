"""GraphQL objects the W&B test double serves, built from its records.

Each builder returns a plain dict whose values are data or callables taking
the field's GraphQL arguments (see ``_graphql``).  Field names follow W&B's
public schema as the SDK queries it; the request log lists any field asked
for that is not here.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _mutations as mutations
from ._graphql import GraphQLError
from ._store import Agent, Project, Run, Sweep, gql_id, loads_json, matches, order_runs, timestamp

if TYPE_CHECKING:
    from ._double import WandbDouble


def _cursor(index: int) -> str:
    return base64.b64encode(f"cursor:{index}".encode()).decode()


def _offset(cursor: Any) -> int:
    """Position after ``cursor`` (cursors encode the index of their edge)."""
    if not cursor:
        return 0
    try:
        return int(base64.b64decode(str(cursor)).decode().split(":", 1)[1]) + 1
    except (ValueError, IndexError) as exc:
        raise GraphQLError(f"invalid cursor {cursor!r}") from exc


def connection(
    items: list[Any], args: dict[str, Any], node: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    """A Relay connection with real ``first``/``after`` paging."""
    start = _offset(args.get("after"))
    first = args.get("first")
    end = len(items) if first is None else min(len(items), start + int(first))
    edges = [{"node": node(items[i]), "cursor": _cursor(i)} for i in range(start, end)]
    return {
        "edges": edges,
        "totalCount": len(items),
        "pageInfo": {
            "__typename": "PageInfo",
            "hasNextPage": end < len(items),
            "hasPreviousPage": start > 0,
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
        },
    }


class Schema:
    """Builds the ``query``/``mutation`` roots over one ``WandbDouble``'s records.

    Called with the double's lock held.
    """

    def __init__(self, double: WandbDouble) -> None:
        self.d = double

    # ------------------------------------------------------------- objects
    def entity(self, name: str) -> dict[str, Any]:
        return {
            "__typename": "Entity",
            "id": gql_id("Entity", name),
            "name": name,
            "isTeam": name != self.d.username,
            "organization": None,
            "defaultAccess": "PRIVATE",
            "readOnly": False,
            "claimingEntity": None,
            "codeSavingEnabled": False,
            "projects": lambda a: connection(self.d._projects_of(name), a, self.project),
            "members": [],
        }

    def viewer(self) -> dict[str, Any]:
        d = self.d
        return {
            "__typename": "User",
            "id": gql_id("User", d.username),
            "name": d.username,
            "username": d.username,
            "entity": d.entity,
            "email": f"{d.username}@example.invalid",
            "admin": False,
            "flags": json.dumps({}),
            "photoUrl": None,
            "deletedAt": None,
            "defaultFramework": None,
            "userInfo": None,
            "codeSavingEnabled": False,
            "teams": {"edges": [{"node": self.entity(d.entity)}]},
            "organizations": [],
            "apiKeys": {"edges": []},
            "defaultEntity": self.entity(d.entity),
        }

    def project(self, project: Project) -> dict[str, Any]:
        d = self.d

        def runs_of(args: dict[str, Any]) -> list[Run]:
            filters = loads_json(args.get("filters"), {})
            try:
                found = [r for r in d._project_runs(project) if matches(r, filters)]
            except ValueError as exc:
                raise GraphQLError(str(exc)) from exc
            return order_runs(found, args.get("order"))

        def sweep(args: dict[str, Any]) -> dict[str, Any] | None:
            found = d._sweeps.get(str(args.get("sweepName") or args.get("name") or ""))
            if found is None or (found.entity, found.project) != (project.entity, project.name):
                return None
            return self.sweep(found)

        def run(args: dict[str, Any]) -> dict[str, Any] | None:
            found = d._runs.get(str(args.get("name") or ""))
            if found is None or (found.entity, found.project) != (project.entity, project.name):
                return None
            return self.run(found)

        sweeps = [
            s for s in d._sweeps.values() if (s.entity, s.project) == (project.entity, project.name)
        ]
        return {
            "__typename": "Project",
            "id": project.gql_id,
            "internalId": str(project.seq),
            "name": project.name,
            "entityName": project.entity,
            "entity": self.entity(project.entity),
            "createdAt": timestamp(d._started_at),
            "updatedAt": timestamp(d._started_at),
            "readOnly": False,
            "isBenchmark": False,
            "access": "PRIVATE",
            "description": None,
            "user": self.viewer(),
            "sweep": sweep,
            "sweeps": lambda a: connection(sweeps, a, self.sweep),
            "totalSweeps": len(sweeps),
            "run": run,
            "bucket": run,
            "runs": lambda a: connection(runs_of(a), a, self.run),
            "buckets": lambda a: connection(runs_of(a), a, self.run),
            "runCount": lambda a: len(runs_of(a)),
            "totalRuns": len(d._project_runs(project)),
        }

    def sweep(self, sweep: Sweep) -> dict[str, Any]:
        d = self.d
        config = sweep.config
        runs = [d._runs[name] for name in d._sweep_run_names(sweep)]
        best = d._best_loss(sweep)
        return {
            "__typename": "Sweep",
            "id": sweep.gql_id,
            "name": sweep.name,
            "displayName": sweep.display_name,
            "method": config.get("method"),
            "state": sweep.state,
            "description": sweep.description,
            "config": sweep.config_yaml,
            "createdAt": timestamp(sweep.created_at),
            "updatedAt": timestamp(sweep.updated_at),
            "heartbeatAt": timestamp(sweep.heartbeat_at) if sweep.heartbeat_at else None,
            "earlyStopJobRunning": False,
            "bestLoss": best,
            "controller": json.dumps(sweep.controller) if sweep.controller else None,
            "scheduler": json.dumps(sweep.scheduler) if sweep.scheduler else None,
            "runCount": len(runs),
            "runCountExpected": d._expected_run_count(sweep),
            "runs": lambda a: connection(order_runs(runs, a.get("order")), a, self.run),
            "project": self.project(d._project(sweep.entity, sweep.project)),
            "user": self.viewer(),
            "agents": lambda a: connection(
                [x for x in d._agents_by_id.values() if x.sweep == sweep.name], a, self.agent
            ),
            "priorRuns": lambda a: connection([], a, self.run),
        }

    def agent(self, agent: Agent) -> dict[str, Any]:
        return {
            "__typename": "Agent",
            "id": agent.gql_id,
            "name": agent.gql_id,
            "host": agent.host,
            "state": agent.state,
            "persistent": False,
            "createdAt": timestamp(agent.created_at),
            "heartbeatAt": timestamp(agent.heartbeat_at or agent.created_at),
            "totalRuns": len(agent.runs),
            "runs": lambda a: connection([self.d._runs[n] for n in agent.runs], a, self.run),
            "sweep": self.sweep(self.d._sweeps[agent.sweep]),
        }

    def run(self, run: Run) -> dict[str, Any]:
        d = self.d
        project = d._project(run.entity, run.project)
        history = [dict(row) for row in run.history]

        def sampled(args: dict[str, Any]) -> list[list[dict[str, Any]]]:
            specs = args.get("specs")
            specs = [specs] if not isinstance(specs, list) else specs
            out = []
            for spec in specs:
                spec = loads_json(spec, {})
                keys = spec.get("keys") if isinstance(spec, dict) else None
                rows = history
                if keys:
                    rows = [{k: r[k] for k in keys if k in r} for r in history]
                    rows = [r for r in rows if set(r) - {"_step"}]
                out.append(rows)
            return out

        history_keys = sorted({k for row in history for k in row})
        wrapped = run.config.get("_wandb")
        internal = wrapped.get("value", {}) if isinstance(wrapped, dict) else {}
        return {
            "__typename": "Run",
            "id": run.gql_id,
            "name": run.name,
            "displayName": run.display_name or run.name,
            "description": run.notes,
            "notes": run.notes,
            "state": run.state,
            "config": json.dumps(run.config),
            "summaryMetrics": json.dumps(run.summary),
            "systemMetrics": json.dumps({}),
            "sweepName": run.sweep,
            # Built only when asked for: each holds the sweep's or project's runs.
            "sweep": lambda a: self.sweep(d._sweeps[run.sweep]) if run.sweep in d._sweeps else None,
            "group": run.group,
            "jobType": run.job_type,
            "tags": list(run.tags),
            "commit": run.commit,
            "host": run.host,
            "program": run.program,
            "readOnly": False,
            "createdAt": timestamp(run.created_at),
            "updatedAt": timestamp(run.updated_at),
            "heartbeatAt": timestamp(run.heartbeat_at or run.created_at),
            "exitcode": run.exitcode,
            "shouldStop": run.should_stop,
            "stopped": run.should_stop,
            "failed": run.state in ("failed", "crashed"),
            "running": run.state == "running",
            "historyLineCount": len(history),
            # What a resumed run reads (RunResumeStatus): the last rows, each a JSON string,
            # in one JSON list, so its steps and runtime go on from there.
            "historyTail": json.dumps([json.dumps(r) for r in history[-10:]]),
            "eventsTail": json.dumps([json.dumps(e) for e in run.events[-10:]]),
            # The SDK's own keys (``_wandb``); a run with no "t" yet has not started.
            "wandbConfig": lambda a: json.dumps(
                {k: internal[k] for k in a.get("keys") or [] if k in internal}
            ),
            "eventsLineCount": len(run.events),
            "logLineCount": len(run.output),
            "historyKeys": {
                "lastStep": len(history) - 1,
                "keys": {k: {"typeCounts": [{"type": "number", "count": 1}]} for k in history_keys},
            },
            "sampledHistory": sampled,
            "history": lambda a: [json.dumps(r) for r in history[: a.get("samples") or None]],
            "events": lambda a: [json.dumps(e) for e in run.events],
            "projectId": project.seq,
            "project": lambda a: self.project(project),
            "user": {
                "__typename": "User",
                "name": d.username,
                "username": d.username,
                "id": gql_id("User", d.username),
            },
            "agent": self.agent(d._agents_by_id[run.agent])
            if run.agent in d._agents_by_id
            else None,
            "files": lambda a: connection(sorted(run.files), a, lambda n: self.file(run, n)),
            "inputArtifacts": lambda a: connection([], a, dict),
            "outputArtifacts": lambda a: connection([], a, dict),
            "resumed": False,
        }

    def file(self, run: Run, name: str) -> dict[str, Any]:
        data = run.files.get(name, b"")
        url = f"{self.d.base_url}/files/{run.entity}/{run.project}/{run.name}/{name}"
        return {
            "__typename": "File",
            "id": gql_id("File", run.name, name),
            "name": name,
            "sizeBytes": len(data),
            "url": lambda a: url,
            "directUrl": url,
            "mimetype": "application/octet-stream",
            "md5": base64.b64encode(hashlib.md5(data).digest()).decode(),
            "updatedAt": timestamp(run.updated_at),
        }

    # --------------------------------------------------------------- roots
    def roots(self) -> dict[str, dict[str, Any]]:
        d = self.d

        def project(args: dict[str, Any]) -> dict[str, Any] | None:
            entity = args.get("entityName") or args.get("entity") or d.entity
            found = d._find_project(str(entity), str(args.get("name") or "uncategorized"))
            return self.project(found) if found else None

        def entity(args: dict[str, Any]) -> dict[str, Any]:
            return self.entity(str(args.get("name") or d.entity))

        def models(args: dict[str, Any]) -> dict[str, Any]:
            entity_name = str(args.get("entityName") or d.entity)
            return connection(d._projects_of(entity_name), args, self.project)

        query = {
            "__typename": "Query",
            "viewer": lambda a: self.viewer(),
            "project": project,
            "model": project,
            "entity": entity,
            "models": models,
            "projects": models,
            "serverInfo": lambda a: self.server_info(),
        }
        mutation = {
            "__typename": "Mutation",
            "upsertSweep": lambda a: mutations.upsert_sweep(d, _input(a)),
            "createAgent": lambda a: mutations.create_agent(d, _input(a)),
            "agentHeartbeat": lambda a: mutations.agent_heartbeat(d, _input(a)),
            "upsertBucket": lambda a: mutations.upsert_bucket(d, _input(a)),
            "upsertModel": lambda a: mutations.upsert_model(d, _input(a)),
            "createRunFiles": lambda a: mutations.create_run_files(d, _input(a)),
            "stopRun": lambda a: mutations.stop_run_mutation(d, _input(a)),
        }
        return {"query": query, "mutation": mutation}

    def server_info(self) -> dict[str, Any]:
        return {
            "__typename": "ServerInfo",
            "features": [],
            "latestLocalVersionInfo": None,
            "cliVersionInfo": json.dumps({}),
            "availableBucketProviders": [],
            "isGoogleIap": False,
            "frontendHost": self.d.base_url,
            "defaultCloudRegion": None,
            "exposesExplicitRunQueueAckPath": False,
        }


def _input(args: dict[str, Any]) -> dict[str, Any]:
    """Mutations take ``input: {...}``; some older ones take flat arguments."""
    given = args.get("input")
    return dict(given) if isinstance(given, dict) else dict(args)
