"""The ``sweeps`` engine over a sweep's records: the choice a W&B server makes.

Records in, decisions out, no I/O. The engine is W&B's own open-source one, so
a local sweep chooses its runs as the same sweep on W&B would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from wbsweep.backends.base import RunRecord, RunState, SweepRecord
from wbsweep.errors import WbsweepError
from wbsweep.values import to_plain

__all__ = ["EngineRuns", "next_params", "reads_history", "reads_runs", "runs_to_stop"]

#: Reported histories by run id: ``[{"_step": step, **metrics}, ...]``.
Histories = dict[str, list[dict[str, Any]]]

# Our run states in the engine's words (W&B calls a stopped run "killed").
_ENGINE_STATE = {state: state.value for state in RunState} | {RunState.STOPPED: "killed"}


def reads_runs(config: dict[str, Any]) -> bool:
    """Whether the method's next run depends on the runs so far (a random draw does not)."""
    return config.get("method") != "random"


def reads_history(config: dict[str, Any]) -> bool:
    """Whether the method reads the runs' results and histories (bayes fits a model on them).

    Grid reads only which params ran; random reads nothing.
    """
    return config.get("method") == "bayes"


class EngineRuns:
    """A sweep's runs in the engine's terms, each terminal run converted only once.

    A run in a terminal state never changes again, nor does its history, so a
    claim in a sweep of thousands of runs converts only the runs still going.
    Keyed by run id: one instance may serve several sweeps.
    """

    def __init__(self) -> None:
        self._final: dict[str, Any] = {}

    def convert(
        self,
        sweep: SweepRecord,
        runs: Sequence[RunRecord],
        histories: Histories,
        shown: Callable[[RunRecord], RunRecord] | None = None,
    ) -> list[Any]:
        """The engine's runs for ``runs`` as stored; ``shown`` maps a live one as a reader sees it.

        ``shown`` (a running run whose worker went silent reads as crashed) is
        applied to live runs only, and never kept: the store may not agree yet.
        """
        out = []
        final = self._final
        for run in runs:
            engine_run = final.get(run.id)  # only terminal runs are kept
            if engine_run is None:
                if run.state.terminal:
                    engine_run = final[run.id] = _engine_run(sweep, run, histories)
                else:
                    engine_run = _engine_run(sweep, shown(run) if shown else run, histories)
            out.append(engine_run)
        return out


def next_params(
    sweep: SweepRecord,
    runs: Sequence[RunRecord],
    histories: Histories | None = None,
    *,
    known: EngineRuns | None = None,
    shown: Callable[[RunRecord], RunRecord] | None = None,
) -> dict[str, Any] | None:
    """The next run's params as plain JSON values; ``None`` when there is none (grid done).

    ``runs`` are every run of the sweep so far; a run's reported history (where
    it has one) is what the engine reads for it, else its objective. ``known``
    keeps converted runs between calls; ``shown`` is as for
    :meth:`EngineRuns.convert`.

    Raises:
        WbsweepError: The engine could not choose (a config it rejects).
    """
    sweeps = _sweeps()
    engine_runs: list[Any] = []
    if reads_runs(sweep.config):
        engine_runs = (known or EngineRuns()).convert(sweep, runs, histories or {}, shown)
    try:
        suggestion = sweeps.next_run(_config(sweep.config), engine_runs)
    except Exception as exc:  # the engine raises plain ValueErrors
        raise WbsweepError(f"sweep {sweep.id}: the search engine failed: {exc}") from exc
    if suggestion is None:
        return None
    # The engine answers in numpy scalars; the store and params file hold JSON.
    return dict(to_plain({k: v["value"] for k, v in suggestion.config.items() if "value" in v}))


def runs_to_stop(
    sweep: SweepRecord, runs: Sequence[RunRecord], histories: Histories | None = None
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


def _runs(sweep: SweepRecord, runs: Sequence[RunRecord], histories: Histories) -> list[Any]:
    return [_engine_run(sweep, run, histories) for run in runs]


def _engine_run(sweep: SweepRecord, run: RunRecord, histories: Histories) -> Any:
    summary = {sweep.metric_name: run.objective} if run.objective is not None else {}
    return _sweeps().SweepRun(
        name=run.id,
        state=_ENGINE_STATE[run.state],
        config={k: {"value": v} for k, v in run.params.items()},
        summary_metrics=summary,
        history=histories.get(run.id) or ([summary] if summary else []),
    )
