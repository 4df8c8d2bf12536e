"""How much each parameter explains a sweep's objective: pure functions over plain values.

The method, one for every kind of parameter: how well a run's objective can be
told from the runs nearest to it in that parameter, leaving the run itself out.

1. The objectives become ranks (ties share their mean rank): the scale of the
   objective and a diverged run's outlier do not matter.
2. Each run's rank is predicted by the mean rank of its neighbours in the
   parameter, the run itself left out: for a categorical parameter, the runs
   with the same value; for a numeric one, the ``k`` runs nearest in the
   parameter's order (``k = max(2, round(sqrt(n)) - 1)``, and every run with
   the same value as the run counts as nearest), so a curved effect (an optimum
   in the middle of a range) counts as much as a straight one.
3. ``importance = 1 - sum((rank - predicted)^2) / sum((rank - mean rank)^2)``,
   at least 0: a leave-one-out R². A parameter with no effect predicts no
   better than chance and scores about 0; one that orders the objective scores
   near 1. Spearman's rank correlation gives a numeric parameter's direction.

>>> r = importance([1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 3e-5, 3e-1], [5, 3, 1, 3, 5, 6, 4, 5.5])
>>> round(r.score, 2), r.by_value
(0.72, False)
>>> importance(["a", "b", "a", "b"], [1.0, 1.0, 1.0, 1.0]).score
0.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Importance", "importance", "is_numeric", "ranks", "spearman"]

#: Fewer runs than this tell nothing.
MIN_RUNS = 4


@dataclass(frozen=True)
class Importance:
    """One parameter's importance.

    Attributes:
        score: The leave-one-out R² of the objective's ranks from the
            parameter's neighbours (0 to 1); ``None`` when it cannot be told
            (``reason`` says why).
        by_value: Neighbours are the runs with the same value (a categorical
            parameter); else the nearest runs in the parameter's order.
        spearman: Spearman's rank correlation with the objective (numeric only).
        reason: Why there is no score: too few runs, a constant parameter.
    """

    score: float | None
    by_value: bool
    spearman: float | None = None
    reason: str | None = None


def is_numeric(values: Sequence[Any]) -> bool:
    """Whether every value is a number (``True``/``False`` are categories).

    >>> is_numeric([1, 2.5]), is_numeric([1, "a"]), is_numeric([True, False]), is_numeric([])
    (True, False, False, False)
    """
    return bool(values) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank.

    >>> ranks([10, 30, 20, 30])
    [1.0, 3.5, 2.0, 3.5]
    """
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation; ``None`` when either side is constant or too short.

    >>> spearman([1, 2, 3], [3, 2, 1]), spearman([1, 1, 1], [1, 2, 3])
    (-1.0, None)
    """
    if len(xs) < 2:
        return None
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def importance(values: Sequence[Any], objectives: Sequence[float]) -> Importance:
    """How much ``values`` (one parameter, one per run) explain ``objectives``."""
    n = len(values)
    if n != len(objectives):
        raise ValueError("one value per objective")
    keys = [_key(v) for v in values]
    numeric = is_numeric(values)
    by_value = not numeric
    rho = spearman([float(v) for v in values], objectives) if numeric else None
    if len(set(keys)) < 2:
        return Importance(None, by_value, rho, "the same value in every run")
    if n < MIN_RUNS:
        return Importance(None, by_value, rho, f"too few runs ({n})")
    y = ranks(objectives)
    mean = sum(y) / n
    total = sum((r - mean) ** 2 for r in y)
    if total == 0:
        return Importance(0.0, by_value, rho)
    if by_value:
        predicted = _by_value(keys, y)
    else:
        predicted = _nearest(ranks([float(v) for v in values]), y, max(2, round(math.sqrt(n)) - 1))
    error = sum((a - b) ** 2 for a, b in zip(y, predicted, strict=True))
    return Importance(max(0.0, min(1.0, 1.0 - error / total)), by_value, rho)


def _by_value(keys: Sequence[Any], y: Sequence[float]) -> list[float]:
    """Each run's prediction: the mean rank of the other runs with its value, else of all."""
    sums: dict[Any, float] = {}
    counts: dict[Any, int] = {}
    for key, r in zip(keys, y, strict=True):
        sums[key] = sums.get(key, 0.0) + r
        counts[key] = counts.get(key, 0) + 1
    total, n = sum(y), len(y)
    return [
        (sums[key] - r) / (counts[key] - 1) if counts[key] > 1 else (total - r) / (n - 1)
        for key, r in zip(keys, y, strict=True)
    ]


def _nearest(x: Sequence[float], y: Sequence[float], k: int) -> list[float]:
    """Each run's prediction: the mean rank of the ``k`` other runs nearest in ``x``
    (every run as near as the ``k``-th counts too)."""
    out = []
    for i, xi in enumerate(x):
        others = sorted((abs(xj - xi), j) for j, xj in enumerate(x) if j != i)
        reach = others[min(k, len(others)) - 1][0]
        near = [y[j] for d, j in others if d <= reach]
        out.append(sum(near) / len(near))
    return out


def _key(value: Any) -> Any:
    """A hashable stand-in for a value (lists and dicts as their text)."""
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return value
    return repr(value)
