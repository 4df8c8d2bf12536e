"""Test-only: the SDK's sweep agents poll every ``WANDB_DOUBLE_AGENT_POLL`` seconds.

``wandb agent`` sleeps ``Agent.POLL_INTERVAL`` before each heartbeat, and the
in-process agent (``wandb.agent(function=...)``, what Transformers' W&B search
runs) ``Agent.HEARTBEAT_SLEEP_SECONDS``: both 5 s, class constants that no
environment variable changes. Against the W&B double a test spends most of
that waiting, so the double's fixture puts this directory on ``PYTHONPATH`` and
sets ``WANDB_DOUBLE_AGENT_POLL``: the constants are set as their modules load,
in every process of the test. The agents' code, their commands and what they
send are the SDK's own.

Python imports the first ``sitecustomize`` on ``sys.path``: the one this
shadows (a distribution's, if any) still runs, after this.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

POLL_ENV = "WANDB_DOUBLE_AGENT_POLL"
#: module -> the class constant it waits by
_CONSTANTS = {
    "wandb.wandb_agent": "POLL_INTERVAL",
    "wandb.agents.pyagent": "HEARTBEAT_SLEEP_SECONDS",
}


class _ShortPoll(importlib.abc.MetaPathFinder):
    """Finds nothing itself: sets the constant once the normal import has run the module."""

    def __init__(self, poll: float) -> None:
        self.poll = poll

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in _CONSTANTS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader, poll, constant = spec.loader, self.poll, _CONSTANTS[name]
        run_module = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_module(module)
            setattr(module.Agent, constant, poll)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _run_the_shadowed_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if os.path.abspath(entry or os.curdir) == here:
            continue
        path = os.path.join(entry or os.curdir, "sitecustomize.py")
        if os.path.isfile(path):
            spec = importlib.util.spec_from_file_location("_shadowed_sitecustomize", path)
            if spec is not None and spec.loader is not None:
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


if os.environ.get(POLL_ENV):
    sys.meta_path.insert(0, _ShortPoll(float(os.environ[POLL_ENV])))
_run_the_shadowed_sitecustomize()
