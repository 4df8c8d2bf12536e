"""The ``sweeps`` engine over a sweep's records: the choice a W&B server makes.

Records in, decisions out, no I/O. The engine is W&B's own open-source one, so
a local sweep chooses its runs as the same sweep on W&B would.
"""

from __future__ import annotations

from typing import Any

from wbsweep.backends.base import RunRecord, RunState, SweepRecord
from wbsweep.errors import WbsweepError
from wbsweep.values import to_plain

__all__ = ["next_params", "runs_to_stop"]

#: Reported histories by run id: ``[{"_step": step, **metrics}, ...]``.
Histories = dict[str, list[dict[str, Any]]]

# Our run states in the engine's words (W&B calls a stopped run "killed").
_ENGINE_STATE = {state: state.value for state in RunState} | {RunState.STOPPED: "killed"}


def next_params(
    sweep: SweepRecord, runs: list[RunRecord], histories: Histories | None = None
) -> dict[str, Any] | None:
    """The next run's params as plain JSON values; ``None`` when there is none (grid done).

    ``runs`` are every run of the sweep so far; a run's reported history (where
    it has one) is what the engine reads for it, else its objective.

    Raises:
        WbsweepError: The engine could not choose (a config it rejects).
    """
    sweeps = _sweeps()
    try:
        suggestion = sweeps.next_run(_config(sweep.config), _runs(sweep, runs, histories or {}))
    except Exception as exc:  # the engine raises plain ValueErrors
        raise WbsweepError(f"sweep {sweep.id}: the search engine failed: {exc}") from exc
    if suggestion is None:
        return None
    # The engine answers in numpy scalars; the store and params file hold JSON.
    return dict(to_plain({k: v["value"] for k, v in suggestion.config.items() if "value" in v}))


def runs_to_stop(
    sweep: SweepRecord, runs: list[RunRecord], histories: Histories | None = None
) -> set[str]:
    """Ids of the running runs the sweep's ``early_terminate`` (hyperband) stops now.

    Empty when the sweep has no ``early_terminate``. Each run's reported
    history is what the engine compares, band by band, as W&B's server does.

    Raises:
        WbsweepError: The engine could not decide (a config it rejects).
    """
    if not sweep.config.get("early_terminate"):
        return set()
    sweeps = _sweeps()
    config = {**_config(sweep.config), "early_terminate": sweep.config["early_terminate"]}
    try:
        stopped = sweeps.stop_runs(config, _runs(sweep, runs, histories or {}))
    except Exception as exc:  # the engine raises plain ValueErrors
        raise WbsweepError(f"sweep {sweep.id}: early termination failed: {exc}") from exc
    return {run.name for run in stopped}


def _sweeps() -> Any:
    """The ``sweeps`` package, imported late (it pulls in scikit-learn and scipy)."""
    import sweeps

    return sweeps


def _config(config: dict[str, Any]) -> dict[str, Any]:
    # The engine reads method, metric and parameters; the rest is for agents.
    return {k: config[k] for k in ("method", "metric", "parameters") if k in config}


def _runs(sweep: SweepRecord, runs: list[RunRecord], histories: Histories) -> list[Any]:
    sweeps = _sweeps()
    engine_runs = []
    for run in runs:
        summary = {sweep.metric_name: run.objective} if run.objective is not None else {}
        engine_runs.append(
            sweeps.SweepRun(
                name=run.id,
                state=_ENGINE_STATE[run.state],
                config={k: {"value": v} for k, v in run.params.items()},
                summary_metrics=summary,
                history=histories.get(run.id) or ([summary] if summary else []),
            )
        )
    return engine_runs
