"""What the W&B test double remembers, and the decisions a W&B server makes.

The records mirror what the real server keeps for a sweep, a run and an agent,
only as far as the SDK or a test can observe it.  Run decisions are delegated
to the open-source ``sweeps`` engine that W&B itself runs, so a sweep behaves
here as it does on W&B (grid exhaustion, bayes proposals, hyperband stops).
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

# run states as W&B reports them (lower case, as the SDK and `sweeps` expect)
TERMINAL_STATES = frozenset({"finished", "failed", "crashed", "killed"})
SWEEP_STATES = frozenset({"RUNNING", "PAUSED", "CANCELED", "FINISHED"})

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_name() -> str:
    """An 8-character id like W&B's sweep and run ids."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def gql_id(*parts: object) -> str:
    """An opaque GraphQL ``ID`` in W&B's style (base64 of ``Type:...``)."""
    return base64.b64encode(":".join(str(p) for p in parts).encode()).decode()


def timestamp(t: float) -> str:
    """W&B's timestamp format (UTC, seconds, no zone suffix)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))


def plain(value: Any) -> Any:
    """Turn numpy scalars/arrays (the `sweeps` engine's output) into JSON types."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return plain(value.tolist())
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    return value


def loads_json(value: Any, default: Any) -> Any:
    """Variables typed ``JSONString`` arrive as JSON text; tolerate dicts and junk."""
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return value


@dataclass
class Project:
    seq: int
    entity: str
    name: str

    @property
    def gql_id(self) -> str:
        return gql_id("Project", self.seq)


@dataclass
class Sweep:
    seq: int
    name: str
    entity: str
    project: str
    config_yaml: str
    state: str = "RUNNING"
    display_name: str | None = None
    description: str | None = None
    controller: Any = None
    scheduler: Any = None
    prior_runs_filters: Any = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    heartbeat_at: float | None = None
    error: str | None = None

    @property
    def gql_id(self) -> str:
        return gql_id("Sweep", self.seq)

    @property
    def config(self) -> dict[str, Any]:
        loaded = yaml.safe_load(self.config_yaml) or {}
        return loaded if isinstance(loaded, dict) else {}


@dataclass
class Run:
    seq: int
    name: str
    entity: str
    project: str
    sweep: str | None = None
    state: str = "pending"
    config: dict[str, Any] = field(default_factory=dict)  # W&B form: {key: {"value": v}}
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    exitcode: int | None = None
    agent: str | None = None  # agent GraphQL id
    display_name: str | None = None
    group: str | None = None
    job_type: str | None = None
    tags: list[str] = field(default_factory=list)
    notes: str | None = None
    host: str | None = None
    program: str | None = None
    commit: str | None = None
    should_stop: bool = False  # the server asked the agent to stop it
    stop_sent: int = 0  # how many stop commands went to the agent
    started: bool = False  # the run's own process talked to the server
    completed: bool = False  # file_stream said complete
    completed_at: float | None = None  # when the double answered that (time.time())
    preempting: bool = False  # the run called mark_preempting(): requeued if it exits non-zero
    sweep_args: dict[str, Any] = field(default_factory=dict)  # the params its agent was handed
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    heartbeat_at: float | None = None

    @property
    def gql_id(self) -> str:
        return gql_id("Run", "v1", self.name, self.project, self.entity)

    def plain_config(self) -> dict[str, Any]:
        """``{key: value}`` without W&B's ``{"value": ...}`` wrapping and ``_wandb``."""
        out = {}
        for key, item in self.config.items():
            if key in ("_wandb", "wandb_version"):
                continue
            out[key] = item.get("value") if isinstance(item, dict) and "value" in item else item
        return out


@dataclass
class Agent:
    seq: int
    sweep: str
    entity: str
    project: str
    host: str | None
    state: str = "RUNNING"
    runs: list[str] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    heartbeat_at: float | None = None
    heartbeats: int = 0

    @property
    def gql_id(self) -> str:
        return gql_id("Agent", self.seq)


# ---------------------------------------------------------------- run queries


_MISSING = object()


def run_field(run: Run, key: str) -> Any:
    """The value a Mongo-style filter or an order key names, or ``_MISSING``.

    Keys as the SDK and W&B's UI write them: ``sweep``, ``state``, ``name``,
    ``displayName``, ``createdAt``/``created_at``, ``config.<k>[.value]``,
    ``summary_metrics.<k>`` (nested with dots), ``tags``, ``group``, ``jobType``.
    """
    simple = {
        "sweep": run.sweep,
        "name": run.name,
        "id": run.name,
        "state": run.state,
        "displayName": run.display_name,
        "display_name": run.display_name,
        "group": run.group,
        "jobType": run.job_type,
        "job_type": run.job_type,
        "tags": run.tags,
        "createdAt": timestamp(run.created_at),
        "created_at": timestamp(run.created_at),
        "updatedAt": timestamp(run.updated_at),
        "updated_at": timestamp(run.updated_at),
        "heartbeatAt": timestamp(run.heartbeat_at or run.created_at),
        "heartbeat_at": timestamp(run.heartbeat_at or run.created_at),
        "host": run.host,
        "username": None,
    }
    if key in simple:
        return simple[key]
    head, _, rest = key.partition(".")
    if head == "config" and rest:
        top, _, sub = rest.partition(".")
        if top not in run.config:
            return _MISSING
        value: Any = run.config[top]
        if isinstance(value, dict) and "value" in value and sub != "value":
            value = value["value"]
        parts = [p for p in sub.split(".") if p and p != "value"] if sub else []
        return _dig(value, parts)
    if head in ("summary_metrics", "summaryMetrics", "summary") and rest:
        return _dig(run.summary, rest.split("."))
    return _MISSING


def _dig(value: Any, parts: list[str]) -> Any:
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if op == "$exists":
        return (actual is not _MISSING and actual is not None) == bool(expected)
    if actual is _MISSING:
        actual = None
    if op == "$eq":
        if isinstance(actual, list) and not isinstance(expected, list):
            return expected in actual
        return bool(actual == expected)
    if op == "$ne":
        return not _compare(actual, "$eq", expected)
    if op == "$in":
        return any(_compare(actual, "$eq", e) for e in expected or [])
    if op == "$nin":
        return not _compare(actual, "$in", expected)
    if op == "$regex":
        return actual is not None and re.search(str(expected), str(actual)) is not None
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if actual is None or expected is None:
            return False
        try:
            if op == "$gt":
                return bool(actual > expected)
            if op == "$gte":
                return bool(actual >= expected)
            if op == "$lt":
                return bool(actual < expected)
            return bool(actual <= expected)
        except TypeError:
            return False
    raise ValueError(f"unsupported filter operator {op!r}")


def matches(run: Run, query: Any) -> bool:
    """Evaluate a Mongo-style filter the way W&B's run search does (enough of it)."""
    if not query:
        return True
    if not isinstance(query, dict):
        raise ValueError(f"filters must be an object, not {query!r}")
    for key, cond in query.items():
        if key == "$and":
            if not all(matches(run, q) for q in cond):
                return False
        elif key == "$or":
            if not any(matches(run, q) for q in cond):
                return False
        elif key == "$nor":
            if any(matches(run, q) for q in cond):
                return False
        elif key == "$not":
            if matches(run, cond):
                return False
        else:
            actual = run_field(run, key)
            if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond):
                for op, expected in cond.items():
                    if op == "$not":
                        if matches(run, {key: expected}):
                            return False
                    elif not _compare(actual, op, expected):
                        return False
            elif not _compare(actual, "$eq", cond):
                return False
    return True


def order_runs(runs: list[Run], order: str | None) -> list[Run]:
    """Sort like W&B: ``+key`` ascending, ``-key`` descending, runs lacking the key last.

    Ties (and the default) keep creation order, newest first for ``-``.
    """
    order = order or "-created_at"
    descending = order.startswith("-")
    key = order.lstrip("+-")
    by_seq = sorted(runs, key=lambda r: r.seq, reverse=descending)
    if key in ("created_at", "createdAt"):
        return by_seq
    present = [r for r in by_seq if _sortable(run_field(r, key))]
    absent = [r for r in by_seq if not _sortable(run_field(r, key))]
    present.sort(key=lambda r: _sort_key(run_field(r, key)), reverse=descending)
    return present + absent


def _sortable(value: Any) -> bool:
    if value is _MISSING or value is None:
        return False
    return not (isinstance(value, float) and math.isnan(value))


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (0, value)
    return (1, json.dumps(value, sort_keys=True) if not isinstance(value, str) else value)
