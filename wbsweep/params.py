"""Trial params into ``TrainingArguments``: each value typed as its field is.

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
from collections.abc import Mapping
from types import UnionType as _UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from wbsweep.errors import TrialError

__all__ = ["apply_params", "training_fields"]


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
