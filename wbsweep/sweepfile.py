"""Importing a user's sweep file by path and checking it has what a trial needs.

A sweep file is a plain Python module. The names it defines mirror
``Trainer.hyperparameter_search()``: ``model_init``, ``hp_space``,
``compute_objective``, plus ``training_args`` (the base ``TrainingArguments``),
``datasets`` (train and eval) and, optionally, ``trainer_kwargs`` and a
``SWEEP`` dict of defaults for ``wbsweep create``.

``create`` loads the file only to read ``hp_space`` and ``SWEEP``, so sweep
files should import heavy libraries inside their functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from wbsweep.errors import SweepFileError

__all__ = ["SWEEP_KEYS", "SweepFile", "describe_error", "load_sweep_file"]

#: Keys the optional ``SWEEP`` dict may hold; anything else is a typo worth reporting.
SWEEP_KEYS = frozenset(
    {"method", "direction", "metric", "n_trials", "early_terminate", "project", "name"}
)

_REQUIRED = ("model_init", "training_args", "datasets")
_OPTIONAL_CALLABLES = ("compute_objective", "trainer_kwargs", "hp_name")


@dataclass(frozen=True)
class SweepFile:
    """What a sweep file defines, checked.

    Attributes:
        path: Absolute path of the sweep file.
        model_init: ``model_init(trial)``; ``trial`` is the trial's params dict.
        training_args: Returns the base ``TrainingArguments``.
        datasets: Returns ``(train_dataset, eval_dataset)``; ``datasets(trial)`` gets the
            trial's params.
        hp_space: An Optuna-style function, a W&B parameters dict / sweep config, or None.
        compute_objective: ``compute_objective(metrics) -> float`` or None for the default.
        trainer_kwargs: Returns extra ``Trainer`` keyword arguments, or None.
        hp_name: ``hp_name(trial) -> str``, the W&B run's name (``trial``: the run's
            params), or None for ``<sweep name>-<n>``.
        defaults: The ``SWEEP`` dict (defaults for ``create``); empty when absent.
    """

    path: str
    model_init: Callable[..., Any]
    training_args: Callable[[], Any]
    datasets: Callable[..., Any]
    hp_space: Callable[[Any], Any] | dict[str, Any] | None = None
    compute_objective: Callable[[dict[str, float]], float] | None = None
    trainer_kwargs: Callable[[], dict[str, Any]] | None = None
    hp_name: Callable[[dict[str, Any]], Any] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


# What a W&B sweep config file is called; a sweep file is Python.
_CONFIG_SUFFIXES = frozenset({".yaml", ".yml", ".json"})


def load_sweep_file(path: str | os.PathLike[str]) -> SweepFile:
    """Import a sweep file by path and check what it defines.

    The file's directory is on ``sys.path`` while it is imported, so it can
    import sibling modules at top level.

    Args:
        path: The sweep file (any extension; read as Python source).

    Returns:
        The checked :class:`SweepFile`.

    Raises:
        SweepFileError: The file is missing, fails to import, lacks a required
            callable, or its ``SWEEP`` dict has an unknown key. The message is
            one line naming the file and the problem.
    """
    abspath = os.path.abspath(os.fspath(path))
    if not os.path.isfile(abspath):
        raise SweepFileError(f"{abspath}: no such sweep file")
    if os.path.splitext(abspath)[1].lower() in _CONFIG_SUFFIXES:
        raise SweepFileError(
            f"{abspath} is a W&B sweep config, not a sweep file: wbsweep needs a Python file "
            "with model_init, training_args and datasets; put this config in it as "
            "hp_space = {...} (or run it with `wandb sweep`)"
        )
    module = _import(abspath)
    return _check(abspath, module)


def _module_name(abspath: str) -> str:
    # Stable per path (datasets' fingerprints hash functions by module name, so
    # every trial of a sweep should see the same name) and distinct per path.
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(abspath))[0])
    digest = hashlib.sha1(abspath.encode()).hexdigest()[:10]
    return f"wbsweep_sweep_{stem}_{digest}"


def _import(abspath: str) -> ModuleType:
    name = _module_name(abspath)
    loader = importlib.machinery.SourceFileLoader(name, abspath)
    spec = importlib.util.spec_from_file_location(name, abspath, loader=loader)
    if spec is None:  # pragma: no cover - SourceFileLoader accepts any file
        raise SweepFileError(f"{abspath}: cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    # Registered before executing so dataclasses, pickling and typing
    # inside the sweep file can find their own module.
    sys.modules[name] = module
    directory = os.path.dirname(abspath)
    sys.path.insert(0, directory)
    try:
        loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt / SystemExit are the user's, not an import error
        raise SweepFileError(f"{abspath}: import failed: {describe_error(exc, abspath)}") from exc
    finally:
        # ValueError: the sweep file removed it itself.
        with contextlib.suppress(ValueError):
            sys.path.remove(directory)
    return module


def describe_error(exc: BaseException, sweep_path: str) -> str:
    """Describe an exception in one line, pointing at the sweep file where it can.

    Args:
        exc: The exception, raised by or through the sweep file's code.
        sweep_path: Absolute path of the sweep file.

    Returns:
        ``"Type: message"`` with whitespace collapsed, plus ``" (<file> line N)"``
        when a frame of the traceback is in the sweep file.
    """
    abspath = os.path.abspath(sweep_path)
    message = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    message = " ".join(str(message).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    line = _line_in(exc, abspath)
    if line is None:
        return text
    return f"{text} ({os.path.basename(abspath)} line {line})"


def _line_in(exc: BaseException, abspath: str) -> int | None:
    if isinstance(exc, SyntaxError) and exc.filename and os.path.abspath(exc.filename) == abspath:
        return exc.lineno
    line = None
    # The innermost frame in the sweep file is the line the user wrote.
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename and os.path.abspath(frame.filename) == abspath:
            line = frame.lineno
    return line


def _check(abspath: str, module: ModuleType) -> SweepFile:
    found: dict[str, Any] = {}
    for name in _REQUIRED:
        value = getattr(module, name, None)
        if value is None:
            raise SweepFileError(f"{abspath}: required function {name}() is not defined")
        if not callable(value):
            raise SweepFileError(
                f"{abspath}: {name} must be a function, not {type(value).__name__}"
            )
        found[name] = value
    for name in _OPTIONAL_CALLABLES:
        value = getattr(module, name, None)
        if value is not None and not callable(value):
            raise SweepFileError(
                f"{abspath}: {name} must be a function, not {type(value).__name__}"
            )
        found[name] = value
    hp_space = getattr(module, "hp_space", None)
    if hp_space is not None and not (callable(hp_space) or isinstance(hp_space, Mapping)):
        raise SweepFileError(
            f"{abspath}: hp_space must be a function or a dict, not {type(hp_space).__name__}"
        )
    if isinstance(hp_space, Mapping):
        hp_space = dict(hp_space)
    return SweepFile(
        path=abspath,
        hp_space=hp_space,
        defaults=_defaults(abspath, getattr(module, "SWEEP", None)),
        **found,
    )


def _defaults(abspath: str, sweep: object) -> dict[str, Any]:
    if sweep is None:
        return {}
    if not isinstance(sweep, Mapping):
        raise SweepFileError(f"{abspath}: SWEEP must be a dict, not {type(sweep).__name__}")
    unknown = sorted(str(key) for key in sweep if key not in SWEEP_KEYS)
    if unknown:
        raise SweepFileError(
            f"{abspath}: SWEEP has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(SWEEP_KEYS))}"
        )
    return dict(sweep)
