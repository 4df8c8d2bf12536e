"""Turn a ``Trainer``-style ``hp_space`` into the W&B ``parameters`` section.

Three shapes are accepted:

* ``None``: Transformers' default search space for the W&B backend.
* An Optuna-style function ``hp_space(trial)``; it is traced with a recording
  trial that notes every ``trial.suggest_*`` call instead of sampling.
* A W&B parameters dict, a whole W&B sweep config (it has a ``parameters``
  key), or a function returning either, as Transformers' W&B backend expects.

Tracing runs the function several times with different answers (low bounds and
first choices, then high bounds and the other choices) so that a parameter
suggested on only one branch of an ``if`` is seen: a W&B sweep has one fixed
set of parameters, so it holds the union of every branch's (a name's range must
be the same on every branch). The search is best effort: only a bounded number
of passes (``_MAX_PASSES``) is made, so a branch that needs a rare combination
of answers can go unseen.

A trial then *replays* the function (:func:`replay`) with a trial that answers
each ``suggest_*`` with the run's sampled value, and applies the dict it
returns, as Transformers' Optuna path does: derived values work
(``2 ** trial.suggest_int("log2_bs", 3, 5)``), and the sampled params the
replay did not ask for (another branch's) are unused on that run.

Everything returned is plain JSON data (no numpy scalars), so it can go through
``json.dumps`` and ``yaml.safe_dump`` unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wbsweep.distributions import (
    categorical_spec,
    fail,
    float_spec,
    int_spec,
    parameter_violations,
)
from wbsweep.errors import SpaceError, TrialError
from wbsweep.values import to_plain

__all__ = [
    "Replay",
    "Space",
    "parameter_violations",
    "replay",
    "suggested_names",
    "to_plain",
    "translate",
]

_MAX_PASSES = 32
_SUPPORTED = (
    "suggest_float, suggest_int, suggest_categorical, suggest_uniform, "
    "suggest_loguniform, suggest_discrete_uniform"
)


@dataclass(frozen=True)
class Space:
    """A translated search space.

    Attributes:
        parameters: The W&B ``parameters`` section (plain JSON types only).
        sweep_defaults: The other top-level keys (``method``, ``metric``,
            ``early_terminate``, ``run_cap``, ...) when a whole sweep config was
            given, else ``{}``.
    """

    parameters: dict[str, dict]
    sweep_defaults: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- tracing


class _OptunaAliases:
    """Optuna's older ``suggest_*`` names, as the float suggestion they stand for."""

    def suggest_float(self, name, low, high, step=None, log=False):
        raise NotImplementedError

    def suggest_uniform(self, name, low, high):
        return self.suggest_float(name, low, high)

    def suggest_loguniform(self, name, low, high):
        return self.suggest_float(name, low, high, log=True)

    def suggest_discrete_uniform(self, name, low, high, q):
        return self.suggest_float(name, low, high, step=q)


class _RecordingTrial(_OptunaAliases):
    """Stands in for ``optuna.Trial``: records suggestions, answers from the probes.

    Pass ``k`` answers each suggestion with ``probes[k % len(probes)]``: the low
    bound or first choice on pass 0, the high bound or second choice on pass 1,
    and so on, so later passes walk every choice of a categorical.
    """

    def __init__(self, pass_index: int) -> None:
        self._pass = pass_index
        self.suggested: dict[str, dict] = {}
        self.errors: list[SpaceError] = []
        self.widest = 1

    def _record(self, name: Any, build: Callable[[], tuple[dict, tuple]]) -> Any:
        try:
            if not isinstance(name, str):
                raise fail(f"parameter name {name!r} is not a string")
            spec, probes = build()
            seen = self.suggested.setdefault(name, spec)
            if seen != spec:
                raise fail(f"parameter '{name}' is suggested twice with different ranges")
        except SpaceError as err:
            # Kept so that an ``except Exception`` in user code cannot hide it.
            self.errors.append(err)
            raise
        self.widest = max(self.widest, len(probes))
        return probes[self._pass % len(probes)]

    def suggest_float(self, name, low, high, step=None, log=False):
        return self._record(name, lambda: float_spec(name, low, high, step, log))

    def suggest_int(self, name, low, high, step=1, log=False):
        return self._record(name, lambda: int_spec(name, low, high, step, log))

    def suggest_categorical(self, name, choices):
        return self._record(name, lambda: categorical_spec(name, choices))

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        err = fail(
            f"trial.{attr} is not supported by wbsweep's recording trial (supported: {_SUPPORTED})"
        )
        self.errors.append(err)
        raise err


def _run_pass(hp_space: Callable, pass_index: int) -> tuple[_RecordingTrial, Any]:
    trial = _RecordingTrial(pass_index)
    try:
        result = hp_space(trial)
    except SpaceError:
        raise
    except Exception as exc:
        if trial.errors:
            raise trial.errors[0] from exc
        raise fail(f"tracing hp_space(trial) raised {type(exc).__name__}: {exc}") from exc
    if trial.errors:
        raise trial.errors[0]
    return trial, result


def _trace(hp_space: Callable) -> tuple[dict[str, dict], Any]:
    """Suggested parameters (empty if none) and the first pass's return value."""
    first, result = _run_pass(hp_space, 0)
    if not first.suggested:
        return {}, result
    # The union of every branch's parameters; a run's replay reads its own branch's.
    merged = dict(first.suggested)
    total, index = min(_MAX_PASSES, max(2, first.widest)), 1
    while index < total:
        trial, _ = _run_pass(hp_space, index)
        for name, spec in trial.suggested.items():
            if merged.setdefault(name, spec) != spec:
                raise fail(
                    f"parameter '{name}' is suggested with different ranges depending on "
                    "other answers; W&B sweeps need fixed ranges"
                )
        total = min(_MAX_PASSES, max(total, trial.widest))
        index += 1
    return merged, result


# ------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class Replay:
    """What ``hp_space`` gave when replayed with one run's sampled values.

    Attributes:
        returned: The dict it returned: what the trial applies.
        read: The sampled params it asked for (this run's branch).
    """

    returned: dict[str, Any]
    read: frozenset[str]


class _ReplayTrial(_OptunaAliases):
    """Stands in for ``optuna.Trial``: answers each ``suggest_*`` with the run's value."""

    def __init__(self, sampled: Mapping[str, Any]) -> None:
        self._sampled = sampled
        self.read: set[str] = set()
        self.errors: list[TrialError] = []

    def _answer(self, name: Any) -> Any:
        if name not in self._sampled:
            err = TrialError(
                f"hp_space(trial) asks for '{name}', which is not a parameter of this sweep "
                "(its branch was not seen when the sweep was created, or hp_space changed since)"
            )
            # Kept so that an ``except Exception`` in user code cannot hide it.
            self.errors.append(err)
            raise err
        self.read.add(name)
        return self._sampled[name]

    def suggest_float(self, name, low, high, step=None, log=False):
        return float(self._answer(name))

    def suggest_int(self, name, low, high, step=1, log=False):
        return int(round(float(self._answer(name))))

    def suggest_categorical(self, name, choices):
        value = self._answer(name)
        # The choice itself, as Optuna gives it (W&B's JSON may turn 1.0 into 1).
        same = [c for c in choices if c == value and type(c) is type(value)]
        return next(iter(same or [c for c in choices if c == value]), value)


def replay(hp_space: Any, sampled: Mapping[str, Any]) -> Replay | None:
    """``hp_space`` called with a trial that answers every ``suggest_*`` from ``sampled``.

    Returns None when there is nothing to replay: ``hp_space`` is a W&B dict
    (or None), or a function that suggests nothing (it returns a W&B config);
    then the sampled params apply as they are.

    Raises:
        TrialError: The function asks for a param the sweep lacks, raises, or
            does not return a dict.

    >>> def hp_space(trial):
    ...     return {"per_device_train_batch_size": 2 ** trial.suggest_int("log2_bs", 3, 5)}
    >>> replay(hp_space, {"log2_bs": 4})
    Replay(returned={'per_device_train_batch_size': 16}, read=frozenset({'log2_bs'}))
    """
    if not callable(hp_space):
        return None
    trial = _ReplayTrial(sampled)
    try:
        result = hp_space(trial)
    except TrialError:
        raise
    except Exception as exc:
        message = " ".join(f"replaying hp_space(trial) raised {type(exc).__name__}: {exc}".split())
        raise TrialError(message) from exc
    if trial.errors:
        raise trial.errors[0]
    if not trial.read:
        return None
    if not isinstance(result, Mapping):
        raise TrialError(
            f"hp_space(trial) returned {type(result).__name__}, not the dict of params to apply"
        )
    return Replay(returned=dict(result), read=frozenset(trial.read))


def suggested_names(hp_space: Callable[[Any], Any]) -> frozenset[str]:
    """Every name an Optuna-style ``hp_space`` suggests, on any branch the trace sees.

    Raises:
        SpaceError: ``hp_space`` cannot be traced (see :func:`translate`).
    """
    return frozenset(_trace(hp_space)[0])


def _from_dict(value: Any, origin: str) -> Space:
    try:
        plain = to_plain(value)
    except TypeError as exc:
        raise fail(f"{origin} is not plain JSON data: {exc}") from exc
    if "parameters" in plain:
        parameters = plain.pop("parameters")
        space = Space(parameters=parameters, sweep_defaults=plain)
    else:
        space = Space(parameters=plain, sweep_defaults={})
    problems = parameter_violations(space.parameters)
    if problems:
        raise fail("; ".join(problems))
    return space


def translate(hp_space: Callable[[Any], Any] | dict | None) -> Space:
    """Turn ``hp_space`` into W&B ``parameters`` (and sweep defaults, if given).

    Optuna calls map to W&B distributions as follows:

    * ``suggest_float(low, high)`` -> ``uniform``; ``log=True`` ->
      ``log_uniform_values``; ``step=s`` -> ``values`` listing ``low, low+s, ...``.
    * ``suggest_int(low, high)`` -> ``int_uniform``; ``log=True`` ->
      ``q_log_uniform_values`` with ``q=1`` (sweeps rounds, so values are whole
      numbers, returned by sweeps as numpy int64: see :func:`wbsweep.values.to_plain`);
      ``step=s > 1`` -> ``values`` listing the steps.
    * ``suggest_categorical(choices)`` -> ``values``.
    * ``low == high`` -> a constant ``value``.

    Stepped ranges become explicit ``values`` because W&B's ``q_uniform`` rounds
    to multiples of ``q`` (so ``low`` need not be a step), gives the end points
    half weight, and grid search over it leaves out ``max``. Ranges with more
    than ``MAX_LISTED_STEPS`` points use ``q_uniform`` when ``low`` is a multiple
    of the step, and are an error otherwise. As in Optuna, ``high`` is lowered to
    the last step that fits.

    Args:
        hp_space: ``None`` (Transformers' default W&B space), an Optuna-style
            function of a trial, a W&B parameters dict or sweep config, or a
            function returning one.

    Returns:
        The translated :class:`Space`.

    Raises:
        SpaceError: The space cannot be expressed as a W&B sweep; the one-line
            message names the parameter(s) at fault.

    >>> def hp_space(trial):
    ...     return {"learning_rate": trial.suggest_float("learning_rate", 1e-6, 1e-4, log=True)}
    >>> translate(hp_space).parameters
    {'learning_rate': {'distribution': 'log_uniform_values', 'min': 1e-06, 'max': 0.0001}}
    """
    if hp_space is None:
        from transformers.trainer_utils import default_hp_space_wandb

        return _from_dict(default_hp_space_wandb(None), "Transformers' default space")
    if isinstance(hp_space, Mapping):
        return _from_dict(hp_space, "the hp_space dict")
    if not callable(hp_space):
        raise fail(f"expected a function, a dict or None, got {type(hp_space).__name__}")
    parameters, result = _trace(hp_space)
    if not parameters:
        if isinstance(result, Mapping):
            return _from_dict(result, "the dict hp_space(trial) returned")
        raise fail("hp_space(trial) suggested no parameters and returned no W&B dict")
    problems = parameter_violations(parameters)
    if problems:
        raise fail("; ".join(problems))
    return Space(parameters=parameters, sweep_defaults={})
