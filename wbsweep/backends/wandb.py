"""The W&B backend: a sweep on a W&B server (W&B cloud or self-hosted W&B Server).

The server holds the sweep, runs the search with W&B's ``sweeps`` engine and
hands runs to ``wandb agent`` processes on any number of machines. wbsweep
registers with ``wandb.sweep``, reads with ``wandb.Api()`` and changes state
with ``wandb sweep --pause|--resume|--stop|--cancel``: the SDK's public
surface only, so any SDK in the tested range works.

A sweep is named by its path ``entity/project/id``. Before the SDK is used, a
short preflight asks the server who the key belongs to: an unreachable server or
a rejected key is then a clear one-line error instead of the SDK's retries.
The API key is sent to the server only; it never appears in what wbsweep
prints, logs or writes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import netrc
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wbsweep.backends import base
from wbsweep.errors import SweepNotFoundError, WbsweepError

DEFAULT_BASE_URL = "https://api.wandb.ai"
PREFLIGHT_TIMEOUT = 15.0

# W&B run states in wbsweep's words (W&B calls a stopped run "killed").
_STATES = {
    "pending": base.PENDING,
    "preempting": base.RUNNING,
    "running": base.RUNNING,
    "finished": base.FINISHED,
    "failed": base.FAILED,
    "crashed": base.CRASHED,
    "killed": base.STOPPED,
    "preempted": base.STOPPED,
}
_CLI_STATE_FLAGS = {
    base.SWEEP_PAUSED: "--pause",
    base.SWEEP_RUNNING: "--resume",
    base.SWEEP_FINISHED: "--stop",
    base.SWEEP_CANCELED: "--cancel",
}


class WandbLoginError(WbsweepError):
    """No API key for the server, or the server rejected it."""

    exit_code = 7


class WandbUnreachableError(WbsweepError):
    """The W&B server did not answer."""

    exit_code = 8


@dataclass(frozen=True)
class SweepPath:
    """``entity/project/id``: where a W&B sweep lives."""

    entity: str
    project: str
    id: str

    def __str__(self) -> str:
        return f"{self.entity}/{self.project}/{self.id}"

    @classmethod
    def parse(cls, text: str) -> SweepPath:
        parts = text.strip("/").split("/")
        if len(parts) != 3 or not all(parts):
            raise WbsweepError(f"W&B sweep path {text!r} is not entity/project/sweep_id")
        return cls(*parts)


def base_url(env: Mapping[str, str] | None = None) -> str:
    source: Mapping[str, str] = os.environ if env is None else env
    return (source.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def api_key(env: Mapping[str, str] | None = None) -> str | None:
    """The key the SDK would use: ``WANDB_API_KEY``, else ``wandb login``'s netrc entry."""
    source: Mapping[str, str] = os.environ if env is None else env
    if source.get("WANDB_API_KEY"):
        return source["WANDB_API_KEY"]
    host = urllib.parse.urlparse(base_url(source)).hostname or ""
    path = source.get("NETRC") or str(Path.home() / ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return entry[2] if entry and entry[2] else None


def has_credentials(env: Mapping[str, str] | None = None) -> bool:
    return api_key(env) is not None


def not_logged_in_message(url: str) -> str:
    return (
        f"not logged in to W&B at {url}: run `wandb login` or set WANDB_API_KEY "
        "(WANDB_BASE_URL for W&B Server), or use --backend local"
    )


def preflight(url: str, key: str | None) -> dict[str, Any]:
    """Ask the server who ``key`` belongs to; ``{"entity", "username"}``.

    Raises ``WandbLoginError`` (no or rejected key) or
    ``WandbUnreachableError`` (no answer) with a one-line message.
    """
    if not key:
        raise WandbLoginError(not_logged_in_message(url))
    body = json.dumps({"query": "query Viewer { viewer { id entity username } }"}).encode()
    token = base64.b64encode(f"api:{key}".encode()).decode()
    request = urllib.request.Request(
        f"{url}/graphql",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=PREFLIGHT_TIMEOUT) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise WandbLoginError(
                f"W&B at {url} rejected the API key: run `wandb login --relogin` or set "
                "WANDB_API_KEY, or use --backend local"
            ) from None
        raise WandbUnreachableError(f"W&B at {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WandbUnreachableError(
            f"cannot reach W&B at {url}: {reason} (check WANDB_BASE_URL and the network, "
            "or use --backend local)"
        ) from None
    viewer = (answer.get("data") or {}).get("viewer")
    if not viewer:
        raise WandbLoginError(not_logged_in_message(url))
    return {"entity": viewer.get("entity"), "username": viewer.get("username")}


class WandbBackend(base.Backend):
    """Sweeps on a W&B server, read and written through the ``wandb`` SDK."""

    name = "wandb"

    def __init__(self, *, entity: str | None = None, project: str | None = None) -> None:
        self.url = base_url()
        self._viewer = preflight(self.url, api_key())
        self.entity = entity or os.environ.get("WANDB_ENTITY") or self._viewer["entity"]
        self.project = project or os.environ.get("WANDB_PROJECT")

    # -- the Backend contract ---------------------------------------------------------

    def create(self, config: dict[str, Any], *, sweep_file: str | None = None) -> str:
        import wandb

        project = self.project or config.get("project") or "wbsweep"
        entity = self.entity
        try:
            # The SDK prints its own lines; keep stdout for wbsweep's (and --json).
            with contextlib.redirect_stdout(sys.stderr):
                sweep_id = wandb.sweep(sweep=config, entity=entity, project=project)
        except Exception as exc:
            raise _sdk_error(exc, f"{entity}/{project}") from None
        if not sweep_id:
            raise WbsweepError(f"W&B did not register the sweep in {entity}/{project}")
        return str(SweepPath(str(entity), str(project), str(sweep_id)))

    def sweep(self, sweep_id: str) -> base.SweepRecord:
        path = SweepPath.parse(sweep_id)
        found = self._api_sweep(path)
        config = dict(found.config)
        return base.SweepRecord(
            id=str(path),
            config=config,
            state=str(found.state).upper(),
            # wbsweep registers the sweep file as the sweep's program.
            sweep_file=config.get("program"),
        )

    def runs(self, sweep_id: str) -> list[base.RunRecord]:
        path = SweepPath.parse(sweep_id)
        sweep = self.sweep(sweep_id)
        return [
            _run_record(run, sweep, str(path))
            for run in self._api_runs(path, {"sweep": path.id}, "+created_at")
        ]

    def best_candidates(self, sweep_id: str) -> list[base.RunRecord]:
        """Finished runs ordered best first by the server, paged through entirely."""
        path = SweepPath.parse(sweep_id)
        sweep = self.sweep(sweep_id)
        sign = "+" if sweep.goal == "minimize" else "-"
        filters = {"$and": [{"sweep": path.id}, {"state": "finished"}]}
        runs = self._api_runs(path, filters, f"{sign}summary_metrics.{sweep.metric_name}")
        return [_run_record(run, sweep, str(path)) for run in runs]

    def set_state(self, sweep_id: str, state: str) -> None:
        path = SweepPath.parse(sweep_id)
        flag = _CLI_STATE_FLAGS.get(state)
        if flag is None:
            raise WbsweepError(f"unknown sweep state {state!r}")
        self._api_sweep(path)  # a clear not-found error before the CLI's own
        result = subprocess.run(
            [wandb_executable(), "sweep", flag, str(path)],
            capture_output=True,
            text=True,
            env=child_env(os.environ),
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            lines = [ln for ln in (result.stderr + result.stdout).splitlines() if ln.strip()]
            detail = lines[-1] if lines else f"exit {result.returncode}"
            raise WbsweepError(f"W&B could not change sweep {path}: {detail.strip()}")

    # -- SDK reads ---------------------------------------------------------------------

    def _api(self) -> Any:
        import wandb

        try:
            return wandb.Api(timeout=60)
        except Exception as exc:
            raise _sdk_error(exc, self.url) from None

    def _api_sweep(self, path: SweepPath) -> Any:
        try:
            found = self._api().sweep(str(path))
        except Exception as exc:
            raise _sdk_error(exc, str(path), not_found=True) from None
        if found is None:
            raise _not_found(path)
        return found

    def _api_runs(self, path: SweepPath, filters: dict[str, Any], order: str) -> list[Any]:
        try:
            runs = self._api().runs(
                f"{path.entity}/{path.project}",
                filters=filters,
                order=order,
                per_page=100,
                lazy=False,
            )
            return list(runs)
        except Exception as exc:
            raise _sdk_error(exc, str(path), not_found=True) from None


def _run_record(run: Any, sweep: base.SweepRecord, sweep_path: str) -> base.RunRecord:
    names = set(sweep.config.get("parameters", {}))
    config = {k: v for k, v in dict(run.config).items() if k in names}
    summary = _summary(run)
    objective = _number(summary.get(sweep.metric_name), sweep.goal)
    metrics = {
        k: v for k, v in summary.items() if not k.startswith("_") and isinstance(v, int | float)
    }
    return base.RunRecord(
        id=str(run.id),
        sweep_id=sweep_path,
        state=_STATES.get(str(run.state).lower(), base.CRASHED),
        params=config,
        objective=objective,
        metrics=metrics,
        created_at=_timestamp(getattr(run, "created_at", None)),
        # W&B creates a sweep run when an agent takes it.
        claimed_at=_timestamp(getattr(run, "created_at", None)),
        started_at=None,
        finished_at=_timestamp(getattr(run, "heartbeat_at", None)),
    )


def _number(value: Any, goal: str) -> float | None:
    """A summary value as a float; ``define_metric`` summaries are ``{"min": v}`` dicts."""
    if isinstance(value, dict):
        value = value.get("min" if goal == "minimize" else "max", value.get("last"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _summary(run: Any) -> dict[str, Any]:
    raw = getattr(run, "summary_metrics", None)
    if isinstance(raw, str):
        raw = json.loads(raw or "{}")
    if not raw:
        raw = dict(getattr(run, "summary", {}) or {})
    return dict(raw)


def _timestamp(value: Any) -> float | None:
    if not value:
        return None
    import datetime as dt

    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def _not_found(path: SweepPath) -> SweepNotFoundError:
    return SweepNotFoundError(
        f"no W&B sweep {path.id!r} in {path.entity}/{path.project} "
        "(check the entity, project and sweep id)"
    )


def _sdk_error(exc: Exception, where: str, *, not_found: bool = False) -> WbsweepError:
    """One line for an SDK failure; never the key, never a traceback."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    lowered = text.lower()
    if "not logged in" in lowered or "credentials" in lowered or "api key" in lowered:
        return WandbLoginError(not_logged_in_message(base_url()))
    if not_found and ("not found" in lowered or "could not find" in lowered or "404" in lowered):
        try:
            return _not_found(SweepPath.parse(where))
        except WbsweepError:
            pass
    key = api_key()
    if key:
        text = text.replace(key, "***")
    return WbsweepError(f"W&B error for {where}: {text}")


def sweep_url(path: SweepPath, url: str | None = None) -> str:
    """The sweep's page on the W&B app (``api.`` host -> app host for W&B cloud)."""
    server = url or base_url()
    parsed = urllib.parse.urlparse(server)
    host = parsed.netloc
    if host.startswith("api."):
        host = host[len("api.") :]
    return f"{parsed.scheme}://{host}/{path.entity}/{path.project}/sweeps/{path.id}"


def wandb_executable() -> str:
    """The ``wandb`` CLI of this install (beside the interpreter), else the one on PATH."""
    beside = Path(sys.executable).parent / "wandb"
    return str(beside) if beside.exists() else "wandb"


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """An environment for a ``wandb`` child: without this process's ``wandb-core`` address."""
    return {k: v for k, v in env.items() if k != "WANDB_SERVICE"}
