"""From a sweep file to a complete sweep config: what ``wbsweep create`` registers.

Precedence, highest first: command-line options, the sweep file's ``SWEEP``
dict, a whole sweep config returned by ``hp_space``, then the defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from wbsweep import config as sweep_config
from wbsweep import space
from wbsweep.shape import TrialShape
from wbsweep.sweepfile import load_sweep_file


@dataclass(frozen=True)
class SweepOptions:
    """What the user chose on the command line (``None``: not given)."""

    #: ``random``, ``grid`` or ``bayes``.
    method: str | None = None
    #: The sweep-wide cap on runs (``run_cap``).
    n_trials: int | None = None
    #: ``minimize`` or ``maximize`` (``min``/``max`` too).
    direction: str | None = None
    #: Hyperband's ``eta``, used with ``hyperband_min_iter``.
    hyperband_eta: int = 3
    #: Stop weak runs early with hyperband; its first bracket, in logged steps.
    hyperband_min_iter: int | None = None
    #: The name the objective is logged under.
    metric: str | None = None
    #: The sweep's display name.
    name: str | None = None
    #: The W&B project, chosen explicitly (see :func:`wbsweep.wandb_run.resolve_project`).
    project: str | None = None
    #: How every trial runs (ranks, mixed precision, accelerate flags); recorded in the command.
    shape: TrialShape | None = None


@dataclass(frozen=True)
class PreparedSweep:
    """A validated sweep config, the sweep file it came from and its W&B project."""

    config: dict[str, Any]
    sweep_file: str
    project: str | None


def prepare_sweep(sweep_file: str | os.PathLike[str], options: SweepOptions) -> PreparedSweep:
    """Load ``sweep_file``, translate its ``hp_space`` and build the validated sweep config."""
    loaded = load_sweep_file(sweep_file)
    config = build_config(
        loaded.hp_space, sweep_file=loaded.path, options=options, defaults=loaded.defaults
    )
    project = options.project or loaded.defaults.get("project")
    return PreparedSweep(config, loaded.path, project)


def build_config(
    hp_space: Any,
    *,
    sweep_file: str,
    options: SweepOptions,
    defaults: Mapping[str, Any] | None = None,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """The validated sweep config for ``hp_space``: ``options`` over ``defaults`` (``SWEEP``).

    ``command`` replaces the trial command (the plugin's trials run in-process).
    """
    chosen = {k: v for k, v in asdict(options).items() if v is not None and k != "shape"}
    merged: dict[str, Any] = {**(defaults or {}), **chosen}
    early_terminate = merged.get("early_terminate")
    if "hyperband_min_iter" in merged:
        early_terminate = sweep_config.hyperband(
            min_iter=merged["hyperband_min_iter"], eta=options.hyperband_eta
        )
    return sweep_config.build_sweep_config(
        space.translate(hp_space),
        sweep_file=sweep_file,
        method=merged.get("method"),
        direction=merged.get("direction"),
        metric=merged.get("metric"),
        n_trials=merged.get("n_trials"),
        early_terminate=early_terminate,
        name=merged.get("name"),
        command=command,
        shape=options.shape,
    )
