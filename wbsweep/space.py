"""Turn a ``Trainer``-style ``hp_space`` into the W&B ``parameters`` section.

Three shapes are accepted:

* ``None``: Transformers' default search space for the W&B backend.
* An Optuna-style function ``hp_space(trial)``; it is traced with a recording
  trial that notes every ``trial.suggest_*`` call instead of sampling.
* A W&B parameters dict, a whole W&B sweep config (it has a ``parameters``
  key), or a function returning either, as Transformers' W&B backend expects.

Tracing runs the function several times with different answers (low bounds and
first choices, then high bounds and the other choices) so that a parameter
suggested on only one branch of an ``if`` is caught: a W&B sweep has one fixed
set of parameters. The search is best effort: only a bounded number of passes
(``_MAX_PASSES``) is made, so a branch that needs a rare combination of answers
can go unseen.

Everything returned is plain JSON data (no numpy scalars), so it can go through
``json.dumps`` and ``yaml.safe_dump`` unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wbsweep.distributions import categorical_spec, fail, float_spec, int_spec, is_number
from wbsweep.errors import SpaceError
from wbsweep.values import one_line, to_plain

__all__ = ["Space", "translate", "to_plain", "parameter_violations"]

_MAX_PASSES = 32
_PARAM_KEYS = frozenset(
    {
        "distribution",
        "value",
        "values",
        "probabilities",
        "min",
        "max",
        "q",
        "mu",
        "sigma",
        "a",
        "b",
        "parameters",
    }
)
_LOG_DISTRIBUTIONS = frozenset(
    {"log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values"}
)
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


class _RecordingTrial:
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

    def suggest_uniform(self, name, low, high):
        return self.suggest_float(name, low, high)

    def suggest_loguniform(self, name, low, high):
        return self.suggest_float(name, low, high, log=True)

    def suggest_discrete_uniform(self, name, low, high, q):
        return self.suggest_float(name, low, high, step=q)

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


def _plural(names: Sequence[str]) -> str:
    quoted = ", ".join(f"'{n}'" for n in names)
    return f"parameter {quoted} is" if len(names) == 1 else f"parameters {quoted} are"


def _trace(hp_space: Callable) -> tuple[dict[str, dict], Any]:
    """Suggested parameters (empty if none) and the first pass's return value."""
    first, result = _run_pass(hp_space, 0)
    if not first.suggested:
        return {}, result
    merged = dict(first.suggested)
    passes = [set(first.suggested)]
    total, index = min(_MAX_PASSES, max(2, first.widest)), 1
    while index < total:
        trial, _ = _run_pass(hp_space, index)
        for name, spec in trial.suggested.items():
            if merged.setdefault(name, spec) != spec:
                raise fail(
                    f"parameter '{name}' is suggested with different ranges depending on "
                    "other answers; W&B sweeps need fixed ranges"
                )
        passes.append(set(trial.suggested))
        total = min(_MAX_PASSES, max(total, trial.widest))
        index += 1
    conditional = sorted(set(merged) - set(passes[0]).intersection(*passes[1:]))
    if conditional:
        raise fail(
            f"{_plural(conditional)} only suggested on some branches; "
            "W&B sweeps need a fixed set of parameters"
        )
    return merged, result


# ----------------------------------------------------------------------- validation


def _own_problems(name: str, spec: Any) -> list[str]:
    if not isinstance(spec, dict):
        return [
            f"parameter '{name}' must be a dict such as {{'values': [...]}}, "
            f"got {type(spec).__name__}"
        ]
    unknown = sorted(set(spec) - _PARAM_KEYS)
    if unknown:
        return [f"parameter '{name}' has unknown key(s) {', '.join(map(repr, unknown))}"]
    if "parameters" in spec:
        nested = spec["parameters"]
        if not isinstance(nested, dict) or not nested:
            return [f"parameter '{name}': nested 'parameters' must be a non-empty dict"]
        return [p for key, sub in nested.items() for p in _own_problems(f"{name}.{key}", sub)]
    problems = []
    if "values" in spec and (not isinstance(spec["values"], list) or not spec["values"]):
        problems.append(f"parameter '{name}': values must be a non-empty list")
    low, high = spec.get("min"), spec.get("max")
    if not (is_number(low) and is_number(high)):
        return problems
    if low > high:
        problems.append(f"parameter '{name}': min {low} is greater than max {high}")
    if spec.get("distribution") in _LOG_DISTRIBUTIONS and low <= 0:
        problems.append(f"parameter '{name}': {spec['distribution']} needs min > 0 (got {low})")
    return problems


def parameter_violations(parameters: Any) -> list[str]:
    """Every problem with a W&B ``parameters`` section, each naming its parameter.

    Runs wbsweep's own checks (unknown keys, empty values, min > max, log bounds)
    and then the ``sweeps`` package's schema on each parameter.

    >>> parameter_violations({"lr": {"min": 0.1, "max": 0.01}})
    ["parameter 'lr': min 0.1 is greater than max 0.01"]
    """
    from sweeps.config import schema_violations_from_proposed_config

    if not isinstance(parameters, dict) or not parameters:
        return ["parameters must be a non-empty dict of name -> W&B parameter dict"]
    problems: list[str] = []
    for name, spec in parameters.items():
        own = _own_problems(str(name), spec)
        if own:
            problems.extend(own)
            continue
        config = {"method": "random", "parameters": {name: spec}}
        problems.extend(
            f"parameter '{name}': {one_line(message)}"
            for message in schema_violations_from_proposed_config(config)
        )
    return problems


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
