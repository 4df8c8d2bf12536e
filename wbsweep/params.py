"""A run's params in its trial: what ``hp_space`` returns, then ``TrainingArguments``.

:func:`trial_params` replays an Optuna-style ``hp_space`` with the run's sampled
values (:func:`wbsweep.space.replay`), as Transformers' Optuna path applies what
it returns: the returned dict sets ``TrainingArguments`` fields, and
``model_init(trial)`` gets it merged with the sampled params of the run's
branch. The other branches' params are unused on that run.

Then each value is typed as its ``TrainingArguments`` field is.

``TrainingArguments`` validates the combination itself (``dataclasses.replace``
runs its ``__post_init__``), so a trial fails with one line naming the param
instead of training with a silently wrong value.

>>> import dataclasses
>>> @dataclasses.dataclass
... class Args:
...     output_dir: str = "out"
...     learning_rate: float = 5e-5
...     num_train_epochs: int = 3
>>> apply_params(Args(), {"learning_rate": "1e-3", "num_train_epochs": 2.0, "dropout": 0.1})
Args(output_dir='out', learning_rate=0.001, num_train_epochs=2)
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import UnionType as _UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from wbsweep.errors import TrialError
from wbsweep.space import replay, suggested_names

__all__ = [
    "RecordingParams",
    "TrialParams",
    "apply_params",
    "trial_params",
    "training_fields",
    "unused_params",
    "warn_unread",
]


@dataclass(frozen=True)
class TrialParams:
    """What one run's sampled params become in its trial.

    Attributes:
        arguments: What sets ``TrainingArguments`` fields (the keys that are fields).
        model: What ``model_init(trial)`` gets.
        unused: The sampled params this run's branch of ``hp_space`` did not read.
        checked: The keys that have no effect unless they are ``TrainingArguments``
            fields or ``model_init`` reads them.
    """

    arguments: dict[str, Any]
    model: dict[str, Any]
    unused: tuple[str, ...] = ()
    checked: tuple[str, ...] = ()


def trial_params(hp_space: Any, sampled: Mapping[str, Any]) -> TrialParams:
    """The run's params as its trial applies them, ``hp_space`` replayed with ``sampled``.

    With nothing to replay (a W&B dict space), the sampled params apply as they are;
    so do sampled params that ``hp_space`` suggests on no branch at all.

    Raises:
        TrialError: The replay failed (see :func:`wbsweep.space.replay`).
        SpaceError: ``hp_space`` can no longer be traced (it changed since ``create``).

    >>> def hp_space(trial):
    ...     optim = trial.suggest_categorical("optim", ["sgd", "adamw_torch"])
    ...     extra = {"momentum": trial.suggest_float("momentum", 0, 1)} if optim == "sgd" else {}
    ...     return {"optim": optim, "batch": 2 ** trial.suggest_int("log2_bs", 3, 5), **extra}
    >>> applied = trial_params(hp_space, {"optim": "adamw_torch", "momentum": 0.9, "log2_bs": 4})
    >>> applied.arguments
    {'optim': 'adamw_torch', 'batch': 16}
    >>> applied.model, applied.unused
    ({'optim': 'adamw_torch', 'log2_bs': 4, 'batch': 16}, ('momentum',))
    """
    replayed = replay(hp_space, sampled)
    if replayed is None:
        return TrialParams(dict(sampled), dict(sampled), (), tuple(sampled))
    unread = set(sampled) - replayed.read
    # A sweep param hp_space never suggests (the sweep was made from another space,
    # a W&B YAML) applies by name, as a W&B dict space's params do.
    known = suggested_names(hp_space) if unread else frozenset()
    foreign = {k: v for k, v in sampled.items() if k in unread and k not in known}
    branch = {k: v for k, v in sampled.items() if k in replayed.read}
    return TrialParams(
        arguments={**foreign, **replayed.returned},
        model={**foreign, **branch, **replayed.returned},
        unused=tuple(sorted(unread - set(foreign))),
        checked=(*replayed.returned, *foreign),
    )


def apply_params(base: Any, params: Mapping[str, Any], *, run_dir: str | None = None) -> Any:
    """The trial's ``TrainingArguments``: ``base`` with the params that are its fields.

    Each value is converted to its field's type (``16.0`` -> ``16`` for an int,
    ``"true"`` -> ``True`` for a bool, a name -> the enum member for
    ``lr_scheduler_type``); params that are not fields (model params) are left
    to ``model_init``. The copy is built with ``dataclasses.replace``, so
    ``TrainingArguments`` validates the combination as it does any other.

    Args:
        base: The sweep file's ``TrainingArguments`` (or a subclass).
        params: The trial's params.
        run_dir: When given, ``output_dir`` becomes ``output_dir/run_dir``.

    Returns:
        A new arguments object; ``base`` is unchanged.

    Raises:
        TrialError: A value cannot be converted, or the arguments reject it.
    """
    cls: type = type(base)
    hints = _field_hints(cls)
    changes = {
        name: _coerce(name, value, hints[name]) for name, value in params.items() if name in hints
    }
    if run_dir is not None:
        changes["output_dir"] = os.path.join(changes.get("output_dir") or base.output_dir, run_dir)
    try:
        return dataclasses.replace(base, **changes)
    except (TypeError, ValueError) as exc:
        message = " ".join(str(exc).split())
        raise TrialError(f"TrainingArguments rejected the trial's params: {message}") from exc


def training_fields(cls: type | None = None) -> frozenset[str]:
    """Names of the ``TrainingArguments`` fields (of ``cls``, a subclass, when given)."""
    if cls is None:
        from transformers import TrainingArguments

        cls = TrainingArguments
    return frozenset(_field_hints(cls))


@functools.cache
def _field_hints(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


_NOT_CONVERTED = object()
_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "off"})


def _coerce(name: str, value: Any, hint: Any) -> Any:
    members = _union_members(hint)
    if Any in members:
        return value
    if value is None:
        if type(None) in members:
            return None
        raise TrialError(f"param {name}: None is not allowed for TrainingArguments.{name}")
    # An ``Enum | str`` field means "one of the enum's names", so check enums first.
    for member in members:
        if isinstance(member, type) and issubclass(member, enum.Enum):
            try:
                return member(value)
            except ValueError:
                choices = ", ".join(str(item.value) for item in member)
                raise TrialError(f"param {name}={value!r} is not one of: {choices}") from None
    for member in members:
        if get_origin(member) is Literal and value in get_args(member):
            return value
        container = get_origin(member) or member
        if container in (dict, list) and isinstance(value, container):
            return value
        if type(value) is member:  # exact: a bool is not taken for an int
            return value
    for target in (bool, int, float, str):
        if target in members:
            converted = _convert(value, target)
            if converted is not _NOT_CONVERTED:
                return converted
    wanted = " | ".join(getattr(m, "__name__", str(m)) for m in members)
    raise TrialError(f"param {name}={value!r} does not fit TrainingArguments.{name} ({wanted})")


def _union_members(hint: Any) -> tuple[Any, ...]:
    if get_origin(hint) in (Union, _UnionType):
        return get_args(hint)
    return (hint,)


def _convert(value: Any, target: type) -> Any:
    if target is bool:
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        return _NOT_CONVERTED
    if isinstance(value, bool):
        return _NOT_CONVERTED  # True as a learning rate or a batch size is a mistake
    if target is int:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return _NOT_CONVERTED
        return int(number) if number.is_integer() else _NOT_CONVERTED
    if target is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            return _NOT_CONVERTED
    if target is str and isinstance(value, int | float):
        return str(value)
    return _NOT_CONVERTED


# ----------------------------------------------------------------- what model_init reads


class RecordingParams(dict):
    """The trial's params as ``model_init`` sees them, noting which keys it reads.

    Anything that enumerates the dict (iteration, ``keys``, ``items``,
    ``values``, ``copy``, ``dict(trial)``, ``**trial``) counts as reading every
    key: the model may use any of them. ``checked`` are the keys that do nothing
    unless read or a ``TrainingArguments`` field [default: every key].
    """

    def __init__(self, params: Mapping[str, Any], checked: tuple[str, ...] | None = None) -> None:
        super().__init__(params)
        self.read: set[str] = set()
        self.checked = tuple(params) if checked is None else checked

    def _all(self) -> None:
        self.read.update(super().keys())

    def __getitem__(self, key: Any) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return super().__contains__(key)

    def pop(self, key: Any, *default: Any) -> Any:
        self.read.add(key)
        return super().pop(key, *default)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self.read.add(key)
        return super().setdefault(key, default)

    def __iter__(self) -> Iterator[Any]:
        self._all()
        return super().__iter__()

    def keys(self) -> Any:
        self._all()
        return super().keys()

    def items(self) -> Any:
        self._all()
        return super().items()

    def values(self) -> Any:
        self._all()
        return super().values()

    def copy(self) -> dict[str, Any]:
        self._all()
        return dict(super().items())


def unused_params(
    params: Mapping[str, Any] | tuple[str, ...], args: Any, read: set[str]
) -> list[str]:
    """Params that are neither ``TrainingArguments`` fields nor read by ``model_init``.

    >>> @dataclasses.dataclass
    ... class Args:
    ...     learning_rate: float = 0.1
    >>> unused_params({"learning_rate": 1, "dropout": 0, "typo": 2}, Args(), {"dropout"})
    ['typo']
    """
    fields = {f.name for f in dataclasses.fields(args)}
    return sorted(k for k in params if k not in fields and k not in read)


_WARNED: set[str] = set()


def warn_unread(params: RecordingParams, args: Any) -> None:
    """One warning, once per process and name, for params that can have no effect.

    Called after ``model_init`` ran with ``params``: its checked keys that are
    neither ``TrainingArguments`` fields nor read by it (a typo, a dead param).
    """
    names = [n for n in unused_params(params.checked, args, params.read) if n not in _WARNED]
    if not names:
        return
    _WARNED.update(names)
    warnings.warn(
        f"wbsweep: param(s) {', '.join(names)} are neither TrainingArguments fields nor read "
        "by model_init(trial); they have no effect",
        UserWarning,
        stacklevel=2,
    )
