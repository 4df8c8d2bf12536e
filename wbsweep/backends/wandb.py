"""The W&B backend: a sweep on a W&B server (W&B cloud or self-hosted W&B Server).

The server holds the sweep, runs the search with W&B's ``sweeps`` engine and
hands runs to ``wandb agent`` processes on any number of machines, so the
server is the run queue (:attr:`WandbBackend.queue` is ``None``). wbsweep
registers with ``wandb.sweep``, reads with ``wandb.Api()``, changes state with
``wandb sweep --pause|--resume|--stop|--cancel`` and runs in-process trials
with ``wandb.agent``: the SDK's public surface only, so any SDK in the tested
range works.

A sweep is named by its path ``entity/project/id``; a bare id gets this
backend's entity and project. Credentials and the preflight that checks them
live in :mod:`wbsweep.backends._wandb_auth`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import yaml

from wbsweep.backends import _wandb_sync as sync
from wbsweep.backends._liveness import heartbeat_timeout, is_stale
from wbsweep.backends._wandb_auth import (
    api_key,
    base_url,
    child_env,
    has_credentials,
    login,
    preflight,
    wandb_executable,
)
from wbsweep.backends._wandb_drive import drive_with_agent
from wbsweep.backends._wandb_keeper import keeper_argv, node_outlook
from wbsweep.backends._wandb_paths import SweepPath, sdk_error, sweep_not_found, sweep_page_url
from wbsweep.backends._wandb_records import ENDED, ENDED_STATES, run_record, sweep_state
from wbsweep.backends.base import (
    Backend,
    ClaimedRun,
    DriveOptions,
    InProcessTrial,
    RunLabel,
    RunRecord,
    RunState,
    SweepRecord,
    SweepState,
)
from wbsweep.errors import (
    SweepStateError,
    UsageError,
    WbsweepError,
)
from wbsweep.shape import WORKER_ENV
from wbsweep.wandb_run import resolve_project

__all__ = [
    "SweepPath",
    "WandbBackend",
    "api_key",
    "base_url",
    "child_env",
    "has_credentials",
    "sweep_page_url",
    "wandb_executable",
]

#: The most rows of a run's history read back (W&B samples longer histories).
HISTORY_SAMPLES = 10_000
#: Runs per request when they are read in full (config and summary).
RUNS_PAGE = 100

_STATE_FLAGS = {
    SweepState.PAUSED: "--pause",
    SweepState.RUNNING: "--resume",
    SweepState.FINISHED: "--stop",
    SweepState.CANCELED: "--cancel",
}


class WandbBackend(Backend):
    """Sweeps on a W&B server, read and written through the ``wandb`` SDK.

    Creating one runs the preflight: ``WandbLoginError`` or
    ``WandbUnreachableError`` when the server will not take the key.
    """

    name = "wandb"
    # Two `wandb agent`s started at once ask the server for a run at the same
    # moment (their first heartbeat, every 5 s): start them apart.
    worker_stagger = 2.5
    # The live progress reads the sweep and all its runs through W&B's API, from
    # every node: not every second.
    progress_poll = 5.0

    def __init__(self, *, entity: str | None = None, project: str | None = None) -> None:
        found = login()
        self.url, self.app_url = found.url, found.app_url
        self._viewer = preflight(self.url, found.key)
        self.entity: str = entity or os.environ.get("WANDB_ENTITY") or self._viewer["entity"]
        #: The explicit project (``--project``, ``project=``); see :func:`resolve_project`.
        self.project = project

    # -- the Backend contract ---------------------------------------------------------

    @property
    def location(self) -> str:
        return f"W&B at {self.url}"

    def resolve(self, sweep_id: str) -> str:
        return str(self._path(sweep_id))

    def sweep_url(self, sweep_id: str) -> str:
        return sweep_page_url(self._path(sweep_id), self.app_url)

    def worker_argv(
        self, sweep_id: str, name: str, count: int | None = None, *, warm: bool = False
    ) -> list[str]:
        limit = ["--count", str(count)] if count is not None else []
        if warm:  # the SDK's agent in a worker process that feeds one warm group
            return [sys.executable, "-m", "wbsweep.warm_wandb", *limit, str(self._path(sweep_id))]
        # `wandb agent` names itself after the host; ``name`` is for local workers.
        return [wandb_executable(), "agent", *limit, str(self._path(sweep_id))]

    def keeper_argv(self, sweep_id: str) -> list[str] | None:
        return keeper_argv(str(self._path(sweep_id)))

    def outlook(self, sweep_id: str) -> str:
        """As :meth:`Backend.outlook`, from the runs W&B has not ended.

        A node asks when its workers found nothing left, then every few seconds
        while others run: in a sweep of 1,000 runs, mostly ended, it reads the
        few that run, not every run's config and summary.
        """
        unsettled = self._sweep_and_runs(sweep_id, states=ENDED_STATES, exclude=True)[1]
        return node_outlook(
            unsettled, now=time.time(), timeout=heartbeat_timeout(), max_retries=_max_retries()
        )

    def create(self, config: dict[str, Any], *, sweep_file: str | None = None) -> str:
        import wandb

        project = resolve_project(self.project, config.get("project"))
        where = f"{self.entity}/{project}"
        try:
            # The SDK prints its own lines; keep stdout for wbsweep's (and --json).
            with (
                contextlib.redirect_stdout(sys.stderr),
                _environ_kept("WANDB_PROJECT", "WANDB_ENTITY"),
            ):
                sweep_id = wandb.sweep(sweep=config, entity=self.entity, project=project)
        except Exception as exc:
            raise sdk_error(exc, where) from None
        if not sweep_id:
            raise WbsweepError(f"W&B did not register the sweep in {where}")
        return str(SweepPath(self.entity, project, str(sweep_id)))

    def import_runs(
        self, sweep: SweepRecord, run_dirs: Mapping[str, Sequence[str]]
    ) -> tuple[str, int]:
        import wandb

        project = resolve_project(self.project, sweep.config.get("project"))
        where = f"{self.entity}/{project}"
        fresh = {run_id: sync.unsynced(dirs) for run_id, dirs in run_dirs.items()}
        upload = [folder for dirs in fresh.values() for folder in dirs]
        if upload:
            argv = sync.sync_argv(wandb_executable(), upload, entity=self.entity, project=project)
            sync.run_wandb(argv, what="wandb sync")
        found = self._project_runs(where, list(run_dirs))
        missing = sorted(set(run_dirs) - {str(run.id) for run in found})
        before = [run_id for run_id in missing if not fresh[run_id]]
        if before:  # `wandb sync` skips a folder it uploaded once, wherever it went
            raise UsageError(
                f"run(s) {', '.join(before)} were uploaded before, not to {where}: "
                "sync to the project they went to"
            )
        if missing:
            raise WbsweepError(
                f"W&B did not take run(s) {', '.join(missing)} into {where} "
                "(run `wandb sync -v` on their offline-run-* folders to see why)"
            )
        held = [str(run.sweep_name) for run in found if getattr(run, "sweep_name", None)]
        loose = [str(run.id) for run in found if not getattr(run, "sweep_name", None)]
        config = sync.sweep_config(sweep.config)
        if not held:
            try:
                with (
                    contextlib.redirect_stdout(sys.stderr),
                    _environ_kept("WANDB_PROJECT", "WANDB_ENTITY"),
                ):
                    made = wandb.sweep(
                        config, entity=self.entity, project=project, prior_runs=loose
                    )
            except Exception as exc:
                raise sdk_error(exc, where) from None
            path = SweepPath(self.entity, project, str(made))
        else:
            path = SweepPath(self.entity, project, held[0])
            if loose:
                with sync.with_config_file(config) as handle:
                    argv = sync.attach_argv(wandb_executable(), str(path), loose, handle.name)
                    sync.run_wandb(argv, what=f"attaching runs to W&B sweep {path}")
        # A state set on W&B since (finished, canceled) stays as it is.
        with contextlib.suppress(SweepStateError):
            self.set_state(str(path), sync.mirrored_state(sweep.state))
        return str(path), sum(1 for dirs in fresh.values() if dirs)

    def sweep(self, sweep_id: str) -> SweepRecord:
        return self._sweep_record(self._path(sweep_id), self._api())

    def _sweep_record(self, path: SweepPath, api: Any) -> SweepRecord:
        found = self._api_sweep(path, api)
        config = dict(found.config)
        return SweepRecord(
            id=str(path),
            config=config,
            state=sweep_state(found.state),
            # wbsweep registers the sweep file as the sweep's program.
            sweep_file=config.get("program"),
        )

    def runs(self, sweep_id: str) -> list[RunRecord]:
        return self._sweep_and_runs(sweep_id)[1]

    def run_label(self, sweep_id: str, run_id: str) -> RunLabel:
        """As :meth:`Backend.run_label`; the worker is the one that runs it now (``wbsweep agent``).

        A trial's rank 0 asks before each run, so this reads the sweep once and
        only its runs' ids, a page of up to 1,000 at a time: a sweep of 1,000
        runs costs one small request, not ten pages of every run's config and
        summary. W&B records a run's worker as its trial starts, so a run
        handed out again still names the last one: here it is this trial's.
        """
        api = self._api()
        path = self._path(sweep_id)
        sweep = self._sweep_record(path, api)
        found = self._api_runs(path, {"sweep": path.id}, "+created_at", api, light=True)
        ids = [run.id for run in found]
        return self._label_among(sweep, ids, run_id, os.environ.get(WORKER_ENV))

    def unsettled_runs(self, sweep_id: str) -> list[RunRecord]:
        """The sweep's runs that W&B calls running or crashed: what the keeper watches.

        Only those come back from W&B: in a sweep of 1,000 runs, mostly ended,
        each node's keeper reads a few runs every few seconds, not all of them.
        """
        return self._sweep_and_runs(sweep_id, states=("running", "crashed"))[1]

    def watch(self, sweep_id: str) -> Callable[[], tuple[SweepRecord, list[RunRecord]]]:
        """As :meth:`Backend.watch`; a run that ended is read in full once, not at every call.

        A sweep of up to one page of runs (100) is read as :meth:`runs` does, in
        one request. Past that, each call reads the ids of all runs (one small
        request per 1,000), the runs that have not ended, and those that ended
        since the last call: a live display of a sweep of 1,000 runs, mostly
        ended, no longer reads ten pages of every run's config and summary.
        """
        kept: dict[str, RunRecord] = {}  # ended runs as last read
        unended: set[str] = set()  # runs that had not ended at the last call
        full = True  # the last call found at most a page of runs: read them all again

        def read() -> tuple[SweepRecord, list[RunRecord]]:
            nonlocal full, unended
            api = self._api()
            path = self._path(sweep_id)
            sweep = self._sweep_record(path, api)
            if full:
                runs = self._records(
                    self._api_runs(path, {"sweep": path.id}, "+created_at", api), sweep
                )
                full = len(runs) <= RUNS_PAGE
                fresh = {r.id: r for r in runs}
                ids = [r.id for r in runs]
            else:
                light = self._api_runs(path, {"sweep": path.id}, "+created_at", api, light=True)
                ids = [str(run.id) for run in light]
                fresh = {
                    r.id: r for r in self._runs_in(path, sweep, api, ENDED_STATES, exclude=True)
                }
                since = [i for i in ids if i not in fresh and (i not in kept or i in unended)]
                if since:
                    among = {"name": {"$in": since}} if len(since) <= RUNS_PAGE else None
                    for r in self._runs_in(path, sweep, api, ENDED_STATES, among=among):
                        fresh.setdefault(r.id, r)
                full = len(ids) <= RUNS_PAGE
            kept.update((i, r) for i, r in fresh.items() if r.state in ENDED)
            unended = {i for i, r in fresh.items() if r.state not in ENDED}
            return sweep, [fresh.get(i) or kept[i] for i in ids if i in fresh or i in kept]

        return read

    def _sweep_and_runs(
        self, sweep_id: str, states: Sequence[str] = (), *, exclude: bool = False
    ) -> tuple[SweepRecord, list[RunRecord]]:
        """The sweep and its runs, oldest first, through one ``wandb.Api`` (one login check).

        ``states``: only the runs W&B has in one of these states (all when empty);
        with ``exclude``, only those in none of them.
        """
        api = self._api()
        path = self._path(sweep_id)
        sweep = self._sweep_record(path, api)
        if not states:
            found = self._api_runs(path, {"sweep": path.id}, "+created_at", api)
            return sweep, self._records(found, sweep)
        return sweep, self._runs_in(path, sweep, api, states, exclude=exclude)

    def _runs_in(
        self,
        path: SweepPath,
        sweep: SweepRecord,
        api: Any,
        states: Sequence[str],
        *,
        exclude: bool = False,
        among: dict[str, Any] | None = None,
    ) -> list[RunRecord]:
        """The sweep's runs that W&B has in one of ``states`` (in none, with ``exclude``),
        oldest first; ``among``: and that match this filter too."""
        filters = [{"sweep": path.id}, {"state": {"$nin" if exclude else "$in": list(states)}}]
        found = self._api_runs(
            path, {"$and": filters + ([among] if among else [])}, "+created_at", api
        )
        return self._records(found, sweep)

    @staticmethod
    def _records(found: Sequence[Any], sweep: SweepRecord) -> list[RunRecord]:
        """``wandb.Api()`` runs of ``sweep`` as records."""
        now, timeout = time.time(), heartbeat_timeout()
        records = [run_record(run, sweep) for run in found]
        # A run whose node is lost stays "running" on W&B for a while: say it crashed.
        return [
            dataclasses.replace(r, state=RunState.CRASHED, reason=_silent(timeout))
            if is_stale(r, now, timeout)
            else r
            for r in records
        ]

    def best_candidates(self, sweep_id: str) -> list[RunRecord]:
        """Finished runs with a finite objective, best first as the server orders them."""
        api = self._api()
        path = self._path(sweep_id)
        sweep = self._sweep_record(path, api)
        sign = "+" if sweep.goal == "minimize" else "-"
        filters = {"$and": [{"sweep": path.id}, {"state": "finished"}]}
        found = self._api_runs(path, filters, f"{sign}summary_metrics.{sweep.metric_name}", api)
        records = [run_record(run, sweep) for run in found]
        return [r for r in records if r.state == RunState.FINISHED and r.has_finite_objective]

    def run_history(self, sweep_id: str, run_id: str) -> list[dict[str, Any]] | None:
        """The run's logged rows (up to :data:`HISTORY_SAMPLES`), W&B's own keys kept.

        ``_step`` is the training step where the run logged ``train/global_step``
        (as Transformers' W&B callback does), else W&B's count of ``log`` calls.
        """
        path = self._path(sweep_id)
        where = f"{path.entity}/{path.project}/{run_id}"
        try:
            rows = self._api().run(where).history(samples=HISTORY_SAMPLES, pandas=False)
        except Exception as exc:
            raise sdk_error(exc, where) from None
        return [_training_step(dict(row)) for row in rows]

    def sweeps(self) -> list[SweepRecord]:
        """The sweeps of this backend's project (``-p``, ``WANDB_PROJECT``), in W&B's order."""
        path = SweepPath(self.entity, resolve_project(self.project), "")
        where = f"{path.entity}/{path.project}"
        try:
            found = list(self._api().project(path.project, path.entity).sweeps())
        except Exception as exc:
            raise sdk_error(exc, where) from None
        records = [
            SweepRecord(
                id=str(SweepPath(path.entity, path.project, str(sweep.id))),
                config=dict(sweep.config),
                state=sweep_state(sweep.state),
                sweep_file=dict(sweep.config).get("program"),
            )
            for sweep in found
        ]
        return records

    def trial_logs(self, sweep_id: str, runs: list[RunRecord]) -> dict[str, str]:
        """The logs this node kept: a warm trial's own, else its worker's (progress mode)."""
        warm_dir = os.path.join(os.environ.get("WANDB_DIR") or os.getcwd(), "wandb", "wbsweep-warm")
        found = {}
        for run in runs:
            if run.ran_as.get("warm"):  # where wbsweep.warm_wandb writes each trial's output
                path = os.path.join(warm_dir, f"run-{run.id}.log")
            elif run.worker:
                path = self.worker_log(sweep_id, run.worker)
            else:
                continue
            if os.path.exists(path):
                found[run.id] = path
        return found

    def set_state(self, sweep_id: str, state: SweepState) -> None:
        try:
            wanted = SweepState(state)
        except ValueError:
            raise UsageError(f"unknown sweep state {state!r}") from None
        path = self._path(sweep_id)
        # A clear not-found error before the CLI's own, and W&B's CLI would
        # resume a finished sweep: a finished or canceled sweep stays so.
        current = sweep_state(self._api_sweep(path, self._api()).state)
        if current == wanted:
            return
        if current.terminal:
            raise SweepStateError(f"sweep {path} is {current.value.lower()} and cannot change")
        result = subprocess.run(
            [wandb_executable(), "sweep", _STATE_FLAGS[wanted], str(path)],
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

    def drive(self, sweep_id: str, trial: InProcessTrial, options: DriveOptions) -> None:
        """Run the sweep's trials in this process with ``wandb.agent``.

        The server chooses each run; ``trial`` opens the run itself (its W&B
        run joins the agent's through ``WANDB_RUN_ID``) and runs in this
        thread, the agent in a side thread (:mod:`._wandb_drive`), so a stop
        from W&B becomes the run's ``should_stop``. A trial that raises is
        marked failed by the agent, which goes on to the next run.
        ``options.log`` gets one line per run as it starts.
        """
        import wandb

        sweep = self.sweep(sweep_id)  # SweepNotFoundError before the agent starts
        path = SweepPath.parse(sweep.id)
        names = set(sweep.config.get("parameters", {}))
        say = options.log or (lambda line: None)
        if sweep.state.terminal:  # the agent would be told to exit, after 5-10 s of polling
            say(f"[{options.worker}] sweep {path} is {sweep.state.value.lower()}: nothing to run")
            return

        def claim(run_id: str, should_stop: Callable[[], bool]) -> ClaimedRun:
            # pyagent has exported the run's id and written its sampled config
            # ({name: {"value": v}} yaml) before calling us, and has not opened
            # a run: the trial's own wandb.init joins this one.
            params = _sweep_params(os.environ["WANDB_SWEEP_PARAM_PATH"], names)
            say(f"[{options.worker}] run {run_id}: {params}")
            return ClaimedRun(run_id, sweep_id=str(path), params=params, should_stop=should_stop)

        def start_agent(function: Callable[[], None]) -> None:
            wandb.agent(
                path.id,
                function=function,
                entity=path.entity,
                project=path.project,
                count=options.count,
                # pyagent (wandb >= 0.31) counts failures in a row itself. It also
                # has limits of its own that apply either way: 3 failed runs in
                # its first 60 s, or WANDB_AGENT_MAX_INITIAL_FAILURES at the start.
                max_consecutive_failed_runs=options.max_consecutive_failures,
            )

        try:
            drive_with_agent(start_agent, claim, trial, options)
        except WbsweepError:
            raise
        except Exception as exc:
            raise sdk_error(exc, str(path), not_found=True) from None

    # -- SDK reads ---------------------------------------------------------------------

    def _path(self, sweep_id: str) -> SweepPath:
        if "/" in sweep_id:
            return SweepPath.parse(sweep_id)
        if not sweep_id:
            raise UsageError("empty W&B sweep id")
        return SweepPath(self.entity, resolve_project(self.project), sweep_id)

    def _api(self) -> Any:
        import wandb

        try:
            return wandb.Api(timeout=60)
        except Exception as exc:
            raise sdk_error(exc, self.url) from None

    def _api_sweep(self, path: SweepPath, api: Any) -> Any:
        try:
            found = api.sweep(str(path))
        except Exception as exc:
            raise sdk_error(exc, str(path), not_found=True) from None
        if found is None:
            raise sweep_not_found(path)
        return found

    def _project_runs(self, where: str, run_ids: list[str]) -> list[Any]:
        """The runs of ``entity/project`` named in ``run_ids`` (none when there is no project)."""
        try:
            runs = self._api().runs(
                where, filters={"name": {"$in": run_ids}}, per_page=100, lazy=False
            )
            return list(runs)
        except Exception as exc:
            lowered = str(exc).lower()
            if "not found" in lowered or "could not find" in lowered:
                return []
            raise sdk_error(exc, where) from None

    def _api_runs(
        self, path: SweepPath, filters: dict[str, Any], order: str, api: Any, *, light: bool = False
    ) -> list[Any]:
        """The runs of ``path``'s project that match ``filters``, read through ``api``.

        ``light``: only what names a run (id, name, state, times), no config or
        summary, in pages of 1,000 instead of 100.
        """
        try:
            runs = api.runs(
                f"{path.entity}/{path.project}",
                filters=filters,
                order=order,
                per_page=1000 if light else RUNS_PAGE,
                lazy=light,
            )
            return list(runs)
        except Exception as exc:
            raise sdk_error(exc, str(path), not_found=True) from None


@contextlib.contextmanager
def _environ_kept(*names: str) -> Iterator[None]:
    """Undo what the block sets in ``os.environ`` under ``names``.

    ``wandb.sweep`` exports the project it registered in; the next sweep or
    trial in this process must still follow the project rule, not that leftover.
    """
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _sweep_params(param_file: str, names: set[str]) -> dict[str, Any]:
    """The sweep's own parameters from pyagent's config file (``{name: {"value": v}}``)."""
    with open(param_file) as fp:
        loaded = yaml.safe_load(fp) or {}
    return {
        k: v["value"] if isinstance(v, dict) and "value" in v else v
        for k, v in loaded.items()
        if k in names
    }


def _training_step(row: dict[str, Any]) -> dict[str, Any]:
    step = row.get("train/global_step")
    if isinstance(step, int | float) and not isinstance(step, bool):
        row["_step"] = int(step)
    return row


def _max_retries() -> int:
    return DriveOptions.from_env("agent", os.environ).max_retries


def _silent(timeout: float) -> str:
    return f"sent no heartbeat for {timeout:g} s (its node or worker is gone)"
