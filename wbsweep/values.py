"""Plain JSON values: what the store, params files and sweep configs hold.

The ``sweeps`` engine answers in numpy scalars and trainers report torch or
numpy numbers; everything that crosses a process or lands on disk is made plain
here first, so ``json.dumps`` and ``yaml.safe_dump`` take it unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["one_line", "plain_metrics", "to_plain"]

_SCALARS = (str, bool, int, float, type(None))


def to_plain(value: Any) -> Any:
    """Return ``value`` with numpy scalars and arrays turned into Python types.

    Tuples become lists; dict keys must be strings. The ``sweeps`` engine returns
    numpy scalars (``np.float64``, ``np.int64``) in the runs it suggests, so this is
    also the way to make its values JSON- and YAML-safe.

    Raises:
        TypeError: ``value`` holds something that is not JSON data.

    >>> to_plain({"lr": np.float64(0.5), "bs": [np.int64(8), (True, None)]})
    {'lr': 0.5, 'bs': [8, [True, None]]}
    """
    if isinstance(value, np.generic | np.ndarray):
        return to_plain(value.tolist())
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"key {key!r} is not a string")
            out[key] = to_plain(item)
        return out
    if isinstance(value, list | tuple):
        return [to_plain(item) for item in value]
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON data")


def plain_metrics(metrics: Mapping[Any, Any]) -> dict[str, Any]:
    """Metrics as JSON-safe values: scalars unwrapped (``.item()``), non-finite floats ``None``.

    >>> plain_metrics({"loss": np.float32(0.5), "acc": float("nan"), 3: "x"})
    {'loss': 0.5, 'acc': None, '3': 'x'}
    """
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[str(key)] = value
    return out


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` on one line (runs of whitespace become one space), cut at ``limit``.

    >>> one_line("a   b"), one_line("abcdef", limit=5)
    ('a b', 'ab...')
    """
    line = " ".join(str(text).split())
    if limit is not None and len(line) > limit:
        return line[: limit - 3] + "..."
    return line
