"""One Optuna ``trial.suggest_*`` call as a W&B parameter: its spec and its probe answers.

Each builder checks its arguments as Optuna would and returns ``(spec, probes)``:
the W&B parameter spec (plain JSON types) and the values the tracing trial
answers with on successive passes (low bound first, then high bound, or each
choice in turn).

>>> float_spec("lr", 1e-5, 1e-3, None, True)
({'distribution': 'log_uniform_values', 'min': 1e-05, 'max': 0.001}, (1e-05, 0.001))
>>> int_spec("layers", 2, 8, 2, False)
({'values': [2, 4, 6, 8]}, (2, 8))

And the checks on a whole W&B ``parameters`` section, however it was written:
:func:`parameter_violations`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

import numpy as np

from wbsweep.errors import SpaceError
from wbsweep.values import one_line, to_plain

__all__ = [
    "MAX_LISTED_STEPS",
    "categorical_spec",
    "fail",
    "float_spec",
    "int_spec",
    "is_number",
    "parameter_violations",
]

#: Stepped ranges with at most this many points become an explicit ``values`` list.
MAX_LISTED_STEPS = 1000
SCALARS = (str, bool, int, float, type(None))
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


def fail(message: str) -> SpaceError:
    """A one-line ``SpaceError`` about ``hp_space``."""
    return SpaceError(" ".join(f"hp_space: {message}".split()))


def is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _real(name: str, what: str, value: Any) -> int | float:
    if not is_number(value):
        raise fail(f"parameter '{name}': {what} {value!r} is not a number")
    if not math.isfinite(value):
        raise fail(f"parameter '{name}': {what} {value!r} is not finite")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _integer(name: str, what: str, value: Any) -> int:
    number = _real(name, what, value)
    if isinstance(number, float) and not number.is_integer():
        raise fail(f"parameter '{name}': {what} {value!r} is not an integer")
    return int(number)


def _tidy(value: float) -> float:
    # low + k * step picks up binary noise (0.30000000000000004); 12 digits hide it.
    return float(f"{value:.12g}")


def _stepped(name: str, low: Any, high: Any, step: Any, n: int) -> tuple[dict, tuple]:
    """Spec for ``low, low + step, ..., <= high`` (Optuna's stepped ranges)."""
    is_int = isinstance(low, int)
    top = low + (n - 1) * step if is_int else _tidy(low + (n - 1) * step)
    if n <= MAX_LISTED_STEPS:
        values = [low + k * step if is_int else _tidy(low + k * step) for k in range(n)]
        return {"values": values}, (low, top)
    ratio = low / step
    if abs(ratio - round(ratio)) > 1e-9:
        raise fail(
            f"parameter '{name}': {n} steps are too many to list and low {low} is not a "
            f"multiple of step {step}, so no W&B distribution gives the same values"
        )
    return {"distribution": "q_uniform", "min": low, "max": top, "q": step}, (low, top)


def _check_range(name: str, low: float, high: float, log: bool) -> None:
    if low > high:
        raise fail(f"parameter '{name}': low {low} is greater than high {high}")
    if log and low <= 0:
        raise fail(f"parameter '{name}': log=True needs low > 0 (got {low})")


def float_spec(name: str, low: Any, high: Any, step: Any, log: bool) -> tuple[dict, tuple]:
    low, high = float(_real(name, "low", low)), float(_real(name, "high", high))
    if step is not None and log:
        raise fail(f"parameter '{name}': step and log=True cannot be used together")
    _check_range(name, low, high, log)
    if low == high:
        return {"value": low}, (low,)
    if log:
        return {"distribution": "log_uniform_values", "min": low, "max": high}, (low, high)
    if step is not None:
        step = float(_real(name, "step", step))
        if step <= 0:
            raise fail(f"parameter '{name}': step must be > 0 (got {step})")
        return _stepped(name, low, high, step, int((high - low) / step + 1e-9) + 1)
    return {"distribution": "uniform", "min": low, "max": high}, (low, high)


def int_spec(name: str, low: Any, high: Any, step: Any, log: bool) -> tuple[dict, tuple]:
    low, high = _integer(name, "low", low), _integer(name, "high", high)
    step = _integer(name, "step", step)
    if step < 1:
        raise fail(f"parameter '{name}': step must be >= 1 (got {step})")
    if log and step != 1:
        raise fail(f"parameter '{name}': step != 1 and log=True cannot be used together")
    _check_range(name, low, high, log)
    if low == high:
        return {"value": low}, (low,)
    if log:
        # An int q makes sweeps round to whole numbers (it returns numpy int64s).
        spec = {"distribution": "q_log_uniform_values", "min": low, "max": high, "q": 1}
        return spec, (low, high)
    if step == 1:
        return {"distribution": "int_uniform", "min": low, "max": high}, (low, high)
    return _stepped(name, low, high, step, (high - low) // step + 1)


def categorical_spec(name: str, choices: Any) -> tuple[dict, tuple]:
    if isinstance(choices, np.ndarray):
        choices = choices.tolist()
    if isinstance(choices, str | bytes | Mapping) or not isinstance(choices, Sequence):
        raise fail(f"parameter '{name}': choices must be a list, got {type(choices).__name__}")
    values = [to_plain(c) if isinstance(c, np.generic) else c for c in choices]
    if not values:
        raise fail(f"parameter '{name}': choices are empty")
    for value in values:
        if not isinstance(value, SCALARS):
            raise fail(
                f"parameter '{name}': choice {value!r} is not a str, int, float, bool or None"
            )
    return {"values": values}, tuple(values)


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
