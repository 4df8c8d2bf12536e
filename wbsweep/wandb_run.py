"""A trial's W&B run: opened with one project rule, the sweep metric, its log and its end.

Only rank 0 of a trial opens a run. The run joins the one a sweep agent chose
(``WANDB_RUN_ID``, ``WANDB_SWEEP_ID`` and ``WANDB_SWEEP_PARAM_PATH`` are the
SDK's own way to say so) by opening it with that id; on a local sweep it is an
offline run that ``wbsweep sync`` uploads later (with the real ``wandb sync``).

The project, everywhere in wbsweep (trial runs, ``wbsweep create``, the
plugin), is the first of:

1. the explicit choice (``--project``, ``project=``);
2. ``WANDB_PROJECT`` (``wandb agent ENTITY/PROJECT/ID`` exports the sweep's);
3. the sweep file's ``SWEEP["project"]``;
4. ``wbsweep``.

>>> resolve_project(None, "from-sweep-file", {})
'from-sweep-file'
>>> resolve_project(None, "from-sweep-file", {"WANDB_PROJECT": "from-env"})
'from-env'
>>> resolve_project("explicit", "from-sweep-file", {"WANDB_PROJECT": "from-env"})
'explicit'
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wbsweep.backends.records import RunLabel

__all__ = ["DEFAULT_PROJECT", "RunSettings", "TrialRun", "resolve_project"]

DEFAULT_PROJECT = "wbsweep"


def resolve_project(
    explicit: str | None,
    sweep_default: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The W&B project by wbsweep's one rule (see the module docstring)."""
    environ = os.environ if environ is None else environ
    return explicit or environ.get("WANDB_PROJECT") or sweep_default or DEFAULT_PROJECT


@dataclass(frozen=True)
class RunSettings:
    """Where and how a trial's W&B run is opened.

    Attributes:
        project: The explicit project, if any (see :func:`resolve_project`).
        sweep_project: The sweep file's ``SWEEP["project"]``.
        entity: The entity; ``None`` lets the SDK choose (``WANDB_ENTITY``, the default).
        group: A run group (a local sweep's runs share one).
        mode: The mode when ``WANDB_MODE`` is unset (``offline`` for local sweeps).
        name: The run's name (``<sweep name>-<n>``, or ``hp_name(trial)``); None: W&B's.
        tags: The run's tags (the backend and the worker).
    """

    project: str | None = None
    sweep_project: str | None = None
    entity: str | None = None
    group: str | None = None
    mode: str | None = None
    name: str | None = None
    tags: tuple[str, ...] = ()

    def labelled(
        self,
        label: RunLabel | None,
        hp_name: Callable[[dict[str, Any]], Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> RunSettings:
        """These settings with the run's name, tags and group from ``label``.

        ``hp_name(params)`` names the run instead when given (Transformers'
        ``hp_name(trial)``; the trial is the run's params, as Transformers' W&B
        search passes them).
        """
        name = label.name if label is not None else self.name
        if hp_name is not None:
            name = str(hp_name(dict(params or {})))
        if label is None:
            return dataclasses.replace(self, name=name)
        return dataclasses.replace(
            self, name=name, tags=label.tags, group=label.group or self.group
        )


class TrialRun:
    """One trial's W&B run, with the sweep metric defined by its goal.

    ``alongside`` says the run was opened while earlier runs of this process may
    still be finishing (a warm worker's last upload goes on while the next trial
    trains), so :meth:`finish` may run in another thread.
    """

    def __init__(self, run: Any, metric: str, goal: str, *, alongside: bool = False) -> None:
        self.run = run
        self.metric = metric
        self.goal = goal
        self.alongside = alongside

    @classmethod
    def open(
        cls,
        settings: RunSettings,
        *,
        run_id: str,
        config: Mapping[str, Any],
        metric: str,
        goal: str,
        alongside: bool = False,
    ) -> TrialRun | None:
        """Open (or join) the run ``run_id``; ``None`` when W&B is disabled.

        ``config`` is the run's config: the sweep's params must win over any
        other value there, so a sweep run holds the sweep's own values.
        A run that exists already (W&B handed it out again after a preemption
        or a crash) goes on with its history and summary. With ``alongside``,
        runs of this process that are still finishing are left to finish, and
        this run becomes ``wandb.run`` (what Transformers' ``WandbCallback`` logs
        to), where the SDK allows it.
        """
        mode = os.environ.get("WANDB_MODE") or settings.mode
        if mode == "disabled":
            return None
        import wandb

        alongside = alongside and _can_make_global()
        run = wandb.init(
            project=resolve_project(settings.project, settings.sweep_project),
            entity=settings.entity,
            id=run_id,
            group=settings.group,
            name=settings.name,
            tags=list(settings.tags) or None,
            config=dict(config),
            mode=mode,  # type: ignore[arg-type]
            # A run W&B hands out again (preempted or crashed) goes on with its history.
            resume="allow",
            # A reused process may still hold the previous trial's run: finished first,
            # unless it finishes in the background meanwhile.
            reinit="create_new" if alongside else "finish_previous",
        )
        if alongside:
            _make_global(run)
        run.define_metric(metric, summary="min" if goal == "minimize" else "max")
        return cls(run, metric, goal, alongside=alongside)

    @property
    def id(self) -> str:
        return str(self.run.id)

    def log_objective(self, objective: float, metrics: Mapping[str, float] | None = None) -> None:
        """Log the objective under the sweep metric (with ``metrics`` when given)."""
        self.run.log({**(metrics or {}), self.metric: objective})

    def set_final(self, objective: float, metrics: Mapping[str, float]) -> None:
        """The trial's final metrics and objective, logged and set in the summary."""
        self.log_objective(objective, metrics)
        self.run.summary[self.metric] = objective

    def set_progress(self, progress: Mapping[str, Any]) -> None:
        """Where the trial is (step, total, latest evaluation), kept in the run's summary."""
        from wbsweep.backends._wandb_records import PROGRESS_KEY

        self.run.summary[PROGRESS_KEY] = dict(progress)

    def mark_preempting(self) -> None:
        """Tell W&B the run is being preempted, so its sweep hands it out again."""
        self.run.mark_preempting()

    def finish(self, exit_code: int) -> None:
        """End the run; a non-zero exit code marks it failed on W&B."""
        self.run.finish(exit_code=exit_code)


def _can_make_global() -> bool:
    try:
        from wandb.sdk.wandb_init import _set_global_run  # noqa: F401
    except ImportError:
        return False
    return True


def _make_global(run: Any) -> None:
    """``wandb.run``, ``wandb.log`` and the rest are ``run``, as ``wandb.init`` makes them.

    ``reinit="create_new"`` leaves them alone; the SDK's own function for it is
    private, so :func:`_can_make_global` checks that it is there first.
    """
    from wandb.sdk.wandb_init import _set_global_run

    _set_global_run(run)
