"""The ``>>>`` examples in wbsweep's docstrings run and print what they show.

One test per module, so a failure names it. A module whose import needs a
package that is not installed is skipped with that package's name; any other
import error fails, since it is a broken module.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import wbsweep


def submodules(path: list[str], prefix: str) -> list[str]:
    """Every module under ``path``, found without importing one.

    So a broken module fails its own test, not the collection of this file.
    """
    found = []
    for info in pkgutil.iter_modules(path, prefix):
        found.append(info.name)
        if info.ispkg:
            found += submodules([str(Path(path[0]) / info.name.rsplit(".", 1)[1])], f"{info.name}.")
    return found


MODULES = sorted(submodules(list(wbsweep.__path__), f"{wbsweep.__name__}."))


def import_or_skip(name: str) -> object:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing.split(".")[0] == wbsweep.__name__:
            raise
        pytest.skip(f"{name} needs {missing}, which is not installed")


def test_every_module_is_found() -> None:
    assert {"wbsweep.config", "wbsweep.space", "wbsweep.hf.session"} <= set(MODULES)


@pytest.mark.parametrize("name", [wbsweep.__name__, *MODULES])
def test_docstring_examples(name: str) -> None:
    module = import_or_skip(name)
    result = doctest.testmod(module)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
