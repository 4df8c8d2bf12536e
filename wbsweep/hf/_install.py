"""Putting wbsweep's backend into Transformers' table, now or when it is first imported.

Kept free of heavy imports: ``import wbsweep`` runs :func:`auto_install`, and
the CLI and the trial worker import ``wbsweep`` on every start.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys
import threading
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["PLUGIN_ENV", "TARGET", "auto_install", "install", "is_installed", "uninstall"]

#: Set to ``0`` (or ``false``/``no``/``off``) to keep ``import wbsweep`` from installing.
PLUGIN_ENV = "WBSWEEP_HF_PLUGIN"
#: The module holding ``ALL_HYPERPARAMETER_SEARCH_BACKENDS``.
TARGET = "transformers.hyperparameter_search"

logger = logging.getLogger("wbsweep.hf")
_lock = threading.RLock()
_original: Any = None  # Transformers' own W&B backend class, for uninstall()


def _table(module: ModuleType) -> tuple[dict[Any, Any], Any]:
    from transformers.trainer_utils import HPSearchBackend

    return module.ALL_HYPERPARAMETER_SEARCH_BACKENDS, HPSearchBackend.WANDB


def _patch(module: ModuleType) -> None:
    """Replace the W&B entry in place: ``trainer.py`` holds the same dict object."""
    global _original
    from wbsweep.hf._entry import backend_class

    with _lock:
        WbsweepBackend = backend_class(module.HyperParamSearchBackendBase)  # noqa: N806
        table, key = _table(module)
        current = table.get(key)
        if current is WbsweepBackend:
            return
        _original = current
        table[key] = WbsweepBackend
        logger.debug("wbsweep: Transformers' hyperparameter_search(backend='wandb') -> wbsweep")


def install() -> None:
    """Make ``trainer.hyperparameter_search(backend="wandb")`` run through wbsweep.

    Idempotent. Imports Transformers (this is the explicit form; ``import
    wbsweep`` uses :func:`auto_install`, which does not).
    """
    import importlib

    _remove_finder()
    _patch(importlib.import_module(TARGET))


def uninstall() -> None:
    """Put Transformers' own W&B backend back (and drop a pending import hook)."""
    _remove_finder()
    module = sys.modules.get(TARGET)
    if module is None:
        return
    from wbsweep.hf._entry import backend_class

    with _lock:
        table, key = _table(module)
        ours = backend_class(module.HyperParamSearchBackendBase)
        if table.get(key) is ours and _original is not None:
            table[key] = _original


def is_installed() -> bool:
    """Whether the W&B entry is wbsweep's now (False while only the hook waits)."""
    module = sys.modules.get(TARGET)
    if module is None or not hasattr(module, "ALL_HYPERPARAMETER_SEARCH_BACKENDS"):
        return False
    table, key = _table(module)
    return getattr(table.get(key), "__module__", "").startswith("wbsweep.")


def plugin_enabled(environ: Any = None) -> bool:
    value = (os.environ if environ is None else environ).get(PLUGIN_ENV, "1")
    return value.strip().lower() not in ("0", "false", "no", "off")


def auto_install() -> None:
    """What ``import wbsweep`` does: patch now if Transformers' table is loaded, else later.

    Never imports Transformers, never raises: a failure here must not break
    ``import wbsweep``, so it becomes a warning.
    """
    if not plugin_enabled():
        return
    try:
        module = sys.modules.get(TARGET)
        if module is not None and hasattr(module, "ALL_HYPERPARAMETER_SEARCH_BACKENDS"):
            _patch(module)
        else:
            _add_finder()
    except Exception as exc:  # noqa: BLE001 - see docstring
        warnings.warn(f"wbsweep: could not install the Transformers plugin: {exc}", stacklevel=2)


# ----------------------------------------------------------------- the import hook


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader, then patches the fresh module before anyone imports from it."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _remove_finder()
        try:
            _patch(module)
        except Exception as exc:  # noqa: BLE001 - never break `import transformers`
            warnings.warn(
                f"wbsweep: could not install the Transformers plugin: {exc}", stacklevel=2
            )

    def __getattr__(self, name: str) -> Any:
        # get_source, get_filename, is_package...: tracebacks and inspect still work.
        return getattr(self._loader, name)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Waits for ``transformers.hyperparameter_search``; finds it as the others would."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _PatchingLoader(spec.loader)
        return spec


_finder: _PatchOnImport | None = None


def _add_finder() -> None:
    global _finder
    with _lock:
        if _finder is None or _finder not in sys.meta_path:
            _finder = _PatchOnImport()
            # First, so it sees the import before the path finder answers.
            sys.meta_path.insert(0, _finder)


def _remove_finder() -> None:
    global _finder
    with _lock:
        if _finder is not None and _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        _finder = None


def hook_pending() -> bool:
    """Whether the import hook is still waiting for Transformers."""
    return _finder is not None and _finder in sys.meta_path
