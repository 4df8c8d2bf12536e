"""The W&B server test double: state, sweep decisions and the HTTP front.

Tests point the real, unmodified ``wandb`` SDK at it (``WANDB_BASE_URL``), so
``wandb.sweep``, the ``wandb agent`` CLI, ``wandb.init`` in the agent's child
processes and ``wandb.Api()`` all run their real code paths; only the server
is fake.  Every request is recorded so tests can assert on what the SDK sent.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ._fast_agent import fast_agent_env
from ._graphql import GraphQLError, execute, parse
from ._http import QuietServer, handler_for
from ._schema import Schema
from ._store import (
    SWEEP_STATES,
    TERMINAL_STATES,
    Agent,
    Project,
    Run,
    Sweep,
    plain,
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

    ``complete_delay`` (seconds, 0 by default) holds the answer to a run's last
    file-stream request, as a slow upload at a run's end would: the SDK's
    ``run.finish()`` waits for it.
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
        self.complete_delay = 0.0
        log_path = log_path or os.environ.get("WANDB_DOUBLE_LOG")
        self.log_path = Path(log_path) if log_path else None
        #: ``(operation name or "METHOD /path", variables or body)`` for each request
        self.requests: list[tuple[str, dict[str, Any]]] = []
        #: every API key a request carried (so a test can assert none leaked)
        self.api_keys_seen: set[str] = set()
        #: unknown operations/paths and fields the double answered with null
        self.unknown: list[str] = []
        #: ``(agent id, command)`` for every command a heartbeat answered
        self.commands: list[tuple[str, dict[str, Any]]] = []
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
        self._server = QuietServer(("127.0.0.1", 0), handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="wandb-double", daemon=True
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
        collection (git, pip freeze), code saving and the version check; and a
        child's sweep agent polls every second instead of every 5 s.
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
                    # stream history every second (default 15 s) so early
                    # termination and tests see logged rows while a run is live
                    "WANDB_X_FILE_STREAM_TRANSMIT_INTERVAL": "1",
                    # a sweep agent heartbeats every second, not every 5 s
                    # (fast_agent/sitecustomize.py)
                    **fast_agent_env(os.environ),
                }
            )
        return env

    def child_env(
        self, extra: dict[str, str] | None = None, *, lean: bool = True
    ) -> dict[str, str]:
        """``os.environ`` + :meth:`env` + ``extra`` for a subprocess (``wandb agent``...).

        Drops ``WANDB_SERVICE``: after any in-process wandb call the SDK stores
        its ``wandb-core`` service address there, and a child inheriting it
        would share (and at its teardown, affect) this process's service.
        """
        env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
        env.update(self.env(lean=lean))
        env.update(extra or {})
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
        ``exitcode``, ``completed_at`` (when its last file-stream request was
        answered, ``time.time()``), ``agent`` (agent id), ``should_stop``, ``files``, ``output``."""
        with self._lock:
            found = self._runs.get(run_id)
            if found is None:
                raise KeyError(f"no run {run_id!r} in the W&B double")
            return self._run_view(found)

    def agents(self) -> list[dict[str, Any]]:
        """``{id, sweep, host, runs, heartbeats}`` for each registered agent."""
        with self._lock:
            return [
                {
                    "id": a.gql_id,
                    "sweep": a.sweep,
                    "host": a.host,
                    "runs": list(a.runs),
                    "heartbeats": a.heartbeats,
                }
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
        self,
        *,
        states: set[str] | frozenset[str] = frozenset({"running"}),
        sweep_id: str | None = None,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Wait until some run (of ``sweep_id``) is in one of ``states``; return it."""
        found: list[Run] = []

        def ready() -> bool:
            found[:] = [
                r
                for r in sorted(self._runs.values(), key=_seq)
                if r.state in states and (sweep_id is None or r.sweep == sweep_id)
            ]
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
        return [
            r
            for r in self._runs.values()
            if (r.entity, r.project) == (project.entity, project.name)
        ]

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
        values = [self._runs[n].summary.get(name) for n in self._sweep_run_names(sweep)]
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
            "completed_at": run.completed_at,
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
            return (
                status,
                [a[1] for a in answers],
                {"op": "batch", "variables": {"n": len(answers)}},
            )
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
