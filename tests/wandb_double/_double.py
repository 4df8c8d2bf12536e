"""The W&B server test double: state, sweep decisions and the HTTP front.

Tests point the real, unmodified ``wandb`` SDK at it (``WANDB_BASE_URL``), so
``wandb.sweep``, the ``wandb agent`` CLI, ``wandb.init`` in the agent's child
processes and ``wandb.Api()`` all run their real code paths; only the server
is fake.  Every request is recorded so tests can assert on what the SDK sent.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import re
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from ._graphql import GraphQLError, execute, parse
from ._schema import Schema
from ._store import (
    SWEEP_STATES,
    TERMINAL_STATES,
    Agent,
    Project,
    Run,
    Sweep,
    loads_json,
    new_name,
    plain,
    timestamp,
)

#: What a test can wait for in :meth:`WandbDouble.wait_for_run`.
STOPPED_STATES = frozenset({"killed"})


class WandbDouble:
    """A W&B server on 127.0.0.1 that answers what the real wandb SDK (0.31) sends.

    Args:
        entity: the viewer's default entity (also its username unless ``username``
            is given); sweeps and runs may use any entity.
        require_key: when set, every request not carrying this API key gets
            HTTP 401, so tests can exercise "not logged in / bad key" paths.
            ``api_key`` is then this key.
        username: the viewer's username.
        log_path: append one JSON line per request here (also taken from the
            ``WANDB_DOUBLE_LOG`` environment variable); handy when the SDK
            starts sending something new.
        repeat_stop: send a run's ``stop`` command on every heartbeat while the
            agent still reports the run (what lets the agent escalate to
            SIGKILL after ``WANDB_AGENT_KILL_DELAY``); ``False`` sends it once.
    """

    def __init__(
        self,
        *,
        entity: str = "test-entity",
        require_key: str | None = None,
        username: str | None = None,
        log_path: str | os.PathLike[str] | None = None,
        repeat_stop: bool = True,
    ) -> None:
        self.entity = entity
        self.username = username or entity
        self.require_key = require_key
        self.api_key = require_key or secrets.token_hex(20)
        self.repeat_stop = repeat_stop
        log_path = log_path or os.environ.get("WANDB_DOUBLE_LOG")
        self.log_path = Path(log_path) if log_path else None
        #: ``(operation name or "METHOD /path", variables or body)`` for each request
        self.requests: list[tuple[str, dict[str, Any]]] = []
        #: every API key a request carried (so a test can assert none leaked)
        self.api_keys_seen: set[str] = set()
        #: unknown operations/paths and fields the double answered with null
        self.unknown: list[str] = []
        #: failures inside the double (bad sweep config, engine errors...)
        self.errors: list[str] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._schema = Schema(self)
        self._started_at = time.time()
        self._projects: dict[tuple[str, str], Project] = {}
        self._sweeps: dict[str, Sweep] = {}
        self._runs: dict[str, Run] = {}
        self._agents_by_id: dict[str, Agent] = {}
        self._seq = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> WandbDouble:
        """Listen on a free port of 127.0.0.1 in a background thread."""
        if self._server is not None:
            return self
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="wandb-double", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> WandbDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the W&B double is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, *, lean: bool = True) -> dict[str, str]:
        """The environment that points the wandb SDK (and its children) here.

        ``lean`` also turns off what only adds traffic and seconds without
        changing the protocol a sweep uses: system-metric sampling, metadata
        collection (git, pip freeze), code saving and the version check.
        """
        env = {
            "WANDB_BASE_URL": self.base_url,
            "WANDB_API_KEY": self.api_key,
            "WANDB_ENTITY": self.entity,
            "WANDB_MODE": "online",
            # a proxy from the environment would swallow 127.0.0.1 requests
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        if lean:
            env.update(
                {
                    "WANDB_X_DISABLE_STATS": "true",
                    "WANDB_X_DISABLE_META": "true",
                    "WANDB_DISABLE_CODE": "true",
                    "WANDB_DISABLE_GIT": "true",
                    "WANDB_X_DISABLE_MACHINE_INFO": "true",
                }
            )
        return env

    # ---------------------------------------------------------- public view
    def sweeps(self) -> list[dict[str, Any]]:
        """Every sweep, oldest first, as :meth:`sweep` describes it."""
        with self._lock:
            return [self._sweep_view(s) for s in sorted(self._sweeps.values(), key=_seq)]

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        """``{id, entity, project, state, config (dict), config_yaml, runs (ids), error}``."""
        with self._lock:
            found = self._sweeps.get(sweep_id)
            if found is None:
                raise KeyError(f"no sweep {sweep_id!r} in the W&B double")
            return self._sweep_view(found)

    def runs(self, sweep_id: str | None = None) -> list[dict[str, Any]]:
        """Runs (of one sweep, or all), oldest first, as :meth:`run` describes them."""
        with self._lock:
            return [
                self._run_view(r)
                for r in sorted(self._runs.values(), key=_seq)
                if sweep_id is None or r.sweep == sweep_id
            ]

    def run(self, run_id: str) -> dict[str, Any]:
        """A run: ``id``, ``entity``, ``project``, ``sweep``, ``state`` (W&B's:
        pending/running/finished/failed/crashed/killed), ``stopped`` (killed by a
        stop), ``config`` (plain values, no ``_wandb``), ``raw_config`` (W&B's
        ``{k: {"value": v}}`` form), ``summary``, ``history`` (logged rows),
        ``exitcode``, ``agent`` (agent id), ``should_stop``, ``files``, ``output``."""
        with self._lock:
            found = self._runs.get(run_id)
            if found is None:
                raise KeyError(f"no run {run_id!r} in the W&B double")
            return self._run_view(found)

    def agents(self) -> list[dict[str, Any]]:
        """``{id, sweep, host, runs, heartbeats}`` for each registered agent."""
        with self._lock:
            return [
                {"id": a.gql_id, "sweep": a.sweep, "host": a.host, "runs": list(a.runs),
                 "heartbeats": a.heartbeats}
                for a in sorted(self._agents_by_id.values(), key=_seq)
            ]

    def operations(self) -> list[str]:
        """The labels of :attr:`requests`, in order (handy for ``in`` asserts)."""
        with self._lock:
            return [label for label, _ in self.requests]

    def stop_run(self, run_id: str) -> None:
        """Ask the agent running ``run_id`` to stop it, as W&B's stop button does
        for a sweep run: its next heartbeat gets ``{"type": "stop"}`` and the
        agent SIGTERMs the run's process; the run ends ``killed``."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise KeyError(f"no run {run_id!r} in the W&B double")
            if run.state not in TERMINAL_STATES:
                run.should_stop = True
            self._changed.notify_all()

    def set_sweep_state(self, sweep_id: str, state: str) -> None:
        """Change a sweep's state as ``wandb sweep --pause/--resume/--stop/--cancel`` would."""
        with self._lock:
            self._set_state(self._sweeps[sweep_id], state.upper())

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        """Block until ``predicate()`` (called with the lock held) is true.

        Raises ``TimeoutError`` naming what the double saw, so a hung test says why.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"W&B double: condition not met in {timeout}s; runs: "
                        f"{[(r.name, r.state) for r in self._runs.values()]}"
                    )
                self._changed.wait(min(left, 0.5))

    def wait_for_run(
        self, *, states: set[str] | frozenset[str] = frozenset({"running"}),
        sweep_id: str | None = None, timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Wait until some run (of ``sweep_id``) is in one of ``states``; return it."""
        found: list[Run] = []

        def ready() -> bool:
            found[:] = [r for r in sorted(self._runs.values(), key=_seq)
                        if r.state in states and (sweep_id is None or r.sweep == sweep_id)]
            return bool(found)

        self.wait_for(ready, timeout)
        return self.run(found[0].name)

    # ------------------------------------------------------------- helpers
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _project(self, entity: str, name: str) -> Project:
        key = (entity, name)
        if key not in self._projects:
            self._projects[key] = Project(self._next_seq(), entity, name)
        return self._projects[key]

    def _find_project(self, entity: str, name: str) -> Project | None:
        return self._projects.get((entity, name))

    def _projects_of(self, entity: str) -> list[Project]:
        return sorted((p for p in self._projects.values() if p.entity == entity), key=_seq)

    def _project_runs(self, project: Project) -> list[Run]:
        return [r for r in self._runs.values()
                if (r.entity, r.project) == (project.entity, project.name)]

    def _sweep_run_names(self, sweep: Sweep) -> list[str]:
        return [r.name for r in sorted(self._runs.values(), key=_seq) if r.sweep == sweep.name]

    def _expected_run_count(self, sweep: Sweep) -> int | None:
        cap = sweep.config.get("run_cap")
        return int(cap) if isinstance(cap, int) else None

    def _best_loss(self, sweep: Sweep) -> float | None:
        metric = sweep.config.get("metric") or {}
        name = metric.get("name")
        if not name:
            return None
        values = [
            self._runs[n].summary.get(name) for n in self._sweep_run_names(sweep)
        ]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if not numbers:
            return None
        return float(max(numbers) if metric.get("goal") == "maximize" else min(numbers))

    def _sweep_view(self, sweep: Sweep) -> dict[str, Any]:
        return {
            "id": sweep.name,
            "entity": sweep.entity,
            "project": sweep.project,
            "state": sweep.state,
            "config": sweep.config,
            "config_yaml": sweep.config_yaml,
            "runs": self._sweep_run_names(sweep),
            "error": sweep.error,
        }

    def _run_view(self, run: Run) -> dict[str, Any]:
        return {
            "id": run.name,
            "name": run.name,
            "entity": run.entity,
            "project": run.project,
            "sweep": run.sweep,
            "state": run.state,
            "stopped": run.state in STOPPED_STATES,
            "config": plain(run.plain_config()),
            "raw_config": json.loads(json.dumps(run.config)),
            "summary": json.loads(json.dumps(run.summary)),
            "history": [dict(r) for r in run.history],
            "exitcode": run.exitcode,
            "agent": run.agent,
            "should_stop": run.should_stop,
            "files": sorted(run.files),
            "output": list(run.output),
        }

    def _set_state(self, sweep: Sweep, state: str) -> None:
        if state not in SWEEP_STATES:
            raise GraphQLError(f"invalid sweep state {state!r}")
        sweep.state = state
        sweep.updated_at = time.time()
        if state == "CANCELED":
            for name in self._sweep_run_names(sweep):
                run = self._runs[name]
                if run.state not in TERMINAL_STATES:
                    run.should_stop = True
        self._changed.notify_all()

    # ------------------------------------------------------------ mutations
    def _upsert_sweep(self, data: dict[str, Any]) -> dict[str, Any]:
        sweep_ref = data.get("id")
        if sweep_ref:
            sweep = self._sweep_by_ref(str(sweep_ref))
            if sweep is None:
                raise GraphQLError(f"sweep {sweep_ref} not found")
            if data.get("config"):
                sweep.config_yaml = str(data["config"])
            if data.get("displayName"):
                sweep.display_name = str(data["displayName"])
            if data.get("state"):
                self._set_state(sweep, str(data["state"]).upper())
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
            entity = str(data.get("entityName") or self.entity)
            project = str(data.get("projectName") or config.get("project") or "uncategorized")
            name = new_name()
            while name in self._sweeps:
                name = new_name()
            sweep = Sweep(
                seq=self._next_seq(),
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
            self._project(entity, project)
            self._sweeps[name] = sweep
        self._changed.notify_all()
        return {
            "sweep": self._schema.sweep(sweep),
            "configValidationWarnings": [],
            "inserted": not sweep_ref,
        }

    def _sweep_by_ref(self, ref: str) -> Sweep | None:
        """The SDK names a sweep by its GraphQL ``id`` (state changes) or its name."""
        for sweep in self._sweeps.values():
            if ref in (sweep.gql_id, sweep.name):
                return sweep
        return None

    def _create_agent(self, data: dict[str, Any]) -> dict[str, Any]:
        sweep = self._sweep_by_ref(str(data.get("sweep") or ""))
        if sweep is None:
            raise GraphQLError(f"sweep {data.get('sweep')!r} not found", status=404)
        agent = Agent(self._next_seq(), sweep.name, sweep.entity, sweep.project, data.get("host"))
        self._agents_by_id[agent.gql_id] = agent
        self._changed.notify_all()
        return {"agent": self._schema.agent(agent)}

    def _agent_heartbeat(self, data: dict[str, Any]) -> dict[str, Any]:
        from ._engine import heartbeat_commands

        agent = self._agents_by_id.get(str(data.get("id") or ""))
        if agent is None or agent.sweep not in self._sweeps:
            raise GraphQLError("agent or sweep not found", status=404)
        commands = heartbeat_commands(self, agent, loads_json(data.get("runState"), {}))
        self._changed.notify_all()
        return {"agent": self._schema.agent(agent), "commands": json.dumps(commands)}

    def _upsert_model(self, data: dict[str, Any]) -> dict[str, Any]:
        entity = str(data.get("entityName") or self.entity)
        project = self._project(entity, str(data.get("name") or "uncategorized"))
        return {"model": self._schema.project(project), "project": self._schema.project(project),
                "inserted": True}

    def _upsert_bucket(self, data: dict[str, Any]) -> dict[str, Any]:
        name = str(data.get("name") or data.get("id") or new_name())
        run = self._runs.get(name)
        inserted = run is None
        if run is None:
            entity = str(data.get("entityName") or data.get("entity") or self.entity)
            project = str(data.get("modelName") or data.get("project") or "uncategorized")
            run = Run(self._next_seq(), name, entity, project)
            self._runs[name] = run
            self._project(entity, project)
        elif data.get("project") or data.get("modelName"):
            run.project = str(data.get("modelName") or data.get("project"))
            run.entity = str(data.get("entityName") or data.get("entity") or run.entity)
            self._project(run.entity, run.project)
        if data.get("sweep") and not run.sweep:
            run.sweep = str(data["sweep"])
        config = loads_json(data.get("config"), None)
        if isinstance(config, dict):
            run.config.update(config)
        summary = loads_json(data.get("summaryMetrics"), None)
        if isinstance(summary, dict):
            run.summary.update(summary)
        for key, attr in (("displayName", "display_name"), ("groupName", "group"),
                          ("jobType", "job_type"), ("notes", "notes"), ("host", "host"),
                          ("jobProgram", "program"), ("commit", "commit")):
            if data.get(key) is not None:
                setattr(run, attr, data[key])
        if data.get("tags") is not None:
            run.tags = list(data["tags"])
        if data.get("description") is not None:
            run.notes = data["description"]
        self._mark_started(run)
        self._changed.notify_all()
        return {"bucket": self._schema.run(run), "inserted": inserted, "updateAvailable": False}

    def _new_sweep_run(self, sweep: Sweep, agent: Agent, config: dict[str, Any]) -> Run:
        """A pending run the engine proposed, handed to ``agent``."""
        name = new_name()
        while name in self._runs:
            name = new_name()
        run = Run(self._next_seq(), name, sweep.entity, sweep.project, sweep=sweep.name,
                  config=dict(config), agent=agent.gql_id)
        self._runs[name] = run
        agent.runs.append(name)
        return run

    def _mark_started(self, run: Run) -> None:
        """The run's own process spoke: a pending (or re-attached) run is running."""
        run.started = True
        run.updated_at = run.heartbeat_at = time.time()
        if run.state == "pending" or (run.state == "crashed" and not run.completed):
            run.state = "running"

    def _create_run_files(self, data: dict[str, Any]) -> dict[str, Any]:
        entity = str(data.get("entityName") or data.get("entity") or self.entity)
        project = str(data.get("projectName") or data.get("project") or "uncategorized")
        run_name = str(data.get("runName") or data.get("run") or "")
        run = self._runs.get(run_name)
        files = []
        for fname in data.get("files") or []:
            url = f"{self.base_url}/upload/{entity}/{project}/{run_name}/{fname}"
            files.append({"name": fname, "uploadUrl": url, "directUrl": url})
        return {
            "runID": run.gql_id if run else run_name,
            "uploadHeaders": [],
            "files": files,
        }

    def _stop_run_mutation(self, data: dict[str, Any]) -> dict[str, Any]:
        for run in self._runs.values():
            if data.get("id") in (run.gql_id, run.name):
                self.stop_run(run.name)
                return {"success": True, "clientMutationId": None}
        raise GraphQLError("run not found")

    # ------------------------------------------------------------ requests
    def _file_stream(self, entity: str, project: str, run_name: str,
                     body: dict[str, Any]) -> dict[str, Any]:
        run = self._runs.get(run_name)
        if run is None:
            run = Run(self._next_seq(), run_name, entity, project)
            self._runs[run_name] = run
            self._project(entity, project)
        self._mark_started(run)
        for fname, chunk in (body.get("files") or {}).items():
            offset = int(chunk.get("offset") or 0)
            lines = [str(x) for x in chunk.get("content") or []]
            if fname == "wandb-history.jsonl":
                rows = [json.loads(line) for line in lines]
                run.history[offset:offset + len(rows)] = rows
            elif fname == "wandb-summary.json":
                if lines:
                    run.summary = json.loads(lines[-1])
            elif fname == "wandb-events.jsonl":
                rows = [json.loads(line) for line in lines]
                run.events[offset:offset + len(rows)] = rows
            elif fname == "output.log":
                run.output[offset:offset + len(lines)] = lines
        if body.get("complete"):
            exitcode = body.get("exitcode")
            run.completed = True
            run.exitcode = int(exitcode) if exitcode is not None else None
            if run.should_stop:
                run.state = "killed"
            elif not exitcode:
                run.state = "finished"
            else:
                run.state = "failed"
        self._changed.notify_all()
        return {"exitcode": None, "limits": {}}

    def _upload(self, path: str, data: bytes) -> None:
        parts = path.split("/", 5)  # "", "upload", entity, project, run, file
        if len(parts) == 6 and parts[4] in self._runs:
            self._runs[parts[4]].files[parts[5]] = data

    def _record(self, entry: dict[str, Any]) -> None:
        label = entry.get("op") or f"{entry['method']} {entry['path']}"
        self.requests.append((str(label), dict(entry.get("variables") or {})))
        if entry.get("missing"):
            self.unknown.extend(f"{label}: {m}" for m in entry["missing"])
        if self.log_path is not None:
            with self.log_path.open("a") as fp:
                fp.write(json.dumps(entry, default=str) + "\n")

    def _graphql(self, body: Any) -> tuple[int, Any, dict[str, Any]]:
        """Answer one GraphQL request body; return status, JSON answer and the log entry."""
        if isinstance(body, list):
            answers = [self._graphql(b) for b in body]
            status = max(a[0] for a in answers)
            return status, [a[1] for a in answers], {"op": "batch",
                                                     "variables": {"n": len(answers)}}
        query = str(body.get("query") or "")
        variables = body.get("variables") or {}
        op_name = body.get("operationName")
        entry: dict[str, Any] = {"variables": variables, "query": query}
        try:
            doc = parse(query)
            op = doc.operation(op_name)
            entry["op"] = op.name or "(anonymous)"
            with self._lock:
                data, missing = execute(doc, op.name, variables, self._schema.roots())
            entry["missing"] = missing
            return 200, {"data": data}, entry
        except GraphQLError as exc:
            entry.setdefault("op", op_name or _op_name_of(query))
            entry["error"] = exc.message
            if "cannot answer" in exc.message or "Syntax" in exc.message:
                self.unknown.append(exc.message)
            return exc.status, {"data": None, "errors": [{"message": exc.message}]}, entry
        except Exception as exc:  # a bug in the double: say so loudly, keep serving
            message = f"W&B double crashed on {op_name or _op_name_of(query)}: {exc!r}"
            self.errors.append(message)
            entry.setdefault("op", op_name or _op_name_of(query))
            entry["error"] = message
            return 500, {"data": None, "errors": [{"message": message}]}, entry


def _seq(item: Any) -> int:
    return int(item.seq)


def _op_name_of(query: str) -> str:
    m = re.search(r"\b(?:query|mutation|subscription)\s+(\w+)", query)
    return m.group(1) if m else "(anonymous)"


def _api_key_of(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        with contextlib.suppress(ValueError):
            user, _, password = base64.b64decode(value).decode().partition(":")
            return password or user
        return None
    return value or None


class _QuietServer(ThreadingHTTPServer):
    """A client hanging up (wandb-core closing idle keep-alive connections at
    teardown) is normal; anything else is printed as usual."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


_FILE_STREAM = re.compile(r"^/files/([^/]+)/([^/]+)/([^/]+)/file_stream$")


def _handler_for(double: WandbDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "wandb-double/1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet: the request log is the record."""

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            if encoding == "gzip":
                raw = gzip.decompress(raw)
            elif encoding == "deflate":
                raw = zlib.decompress(raw)
            return raw

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self, entry: dict[str, Any]) -> bool:
            key = _api_key_of(self.headers.get("Authorization"))
            with double._lock:
                if key:
                    double.api_keys_seen.add(key)
            entry["has_key"] = bool(key)
            if double.require_key is None or key == double.require_key:
                return True
            entry["status"] = 401
            with double._lock:
                double._record(entry)
            self._send(401, {"errors": [{"message": "Unauthorized: invalid API key"}]})
            return False

        def _handle(self, method: str) -> None:
            path = self.path.split("?", 1)[0]
            entry: dict[str, Any] = {"t": round(time.time(), 3), "method": method, "path": path}
            body = self._body()
            if path.startswith("/upload/"):  # presigned upload URLs carry no key
                with double._lock:
                    double._upload(path, body)
                    double._record({**entry, "variables": {"bytes": len(body)}})
                self._send(200, {})
                return
            if not self._authorized(entry):
                return
            status, answer = 200, {}
            try:
                if path == "/graphql" and method == "POST":
                    status, answer, extra = double._graphql(json.loads(body or b"{}"))
                    entry.update(extra)
                elif (m := _FILE_STREAM.match(path)) and method == "POST":
                    payload = json.loads(body or b"{}")
                    entry["variables"] = payload
                    with double._lock:
                        answer = double._file_stream(*m.groups(), payload)
                elif path.startswith("/sdk/otel") or path.startswith("/v1/"):
                    entry["variables"] = {"bytes": len(body)}
                else:
                    status = 404
                    answer = {"error": f"the W&B double has no {method} {path}"}
                    with double._lock:
                        double.unknown.append(f"{method} {path}")
            except Exception as exc:  # never leave the SDK hanging on a double bug
                status, answer = 500, {"error": f"W&B double crashed: {exc!r}"}
                with double._lock:
                    double.errors.append(f"{method} {path}: {exc!r}")
            entry["status"] = status
            with double._lock:
                double._record(entry)
            self._send(status, answer)

        def do_POST(self) -> None:  # noqa: N802
            self._handle("POST")

        def do_PUT(self) -> None:  # noqa: N802
            self._handle("PUT")

        def do_GET(self) -> None:  # noqa: N802
            self._handle("GET")

    return Handler


def iter_runs(double: WandbDouble) -> Iterator[dict[str, Any]]:
    """All runs, for ad-hoc debugging in a REPL."""
    yield from double.runs()
