"""Test-only: the real ``wandb agent`` CLI, polling every ``WANDB_DOUBLE_AGENT_POLL`` seconds.

``wandb agent`` sleeps ``Agent.POLL_INTERVAL`` (5 s, a class constant that no
environment variable changes) before each heartbeat. Against the W&B double a
test spends most of that waiting, so the double's fixture puts this directory
on ``PYTHONPATH`` and sets ``WANDB_DOUBLE_AGENT_POLL``: in a process started as
``wandb agent ...`` (and only there) the constant is set before the CLI runs.
The agent's code, its commands and what it sends are the SDK's own.

Python imports the first ``sitecustomize`` on ``sys.path``: the one this
shadows (a distribution's, if any) still runs, after this.
"""

from __future__ import annotations

import importlib.util
import os
import sys

POLL_ENV = "WANDB_DOUBLE_AGENT_POLL"


def _shorten_the_agents_poll() -> None:
    poll = os.environ.get(POLL_ENV)
    argv = getattr(sys, "argv", [])
    if not poll or len(argv) < 2 or os.path.basename(argv[0]) != "wandb" or argv[1] != "agent":
        return
    from wandb import wandb_agent

    wandb_agent.Agent.POLL_INTERVAL = float(poll)  # type: ignore[assignment]


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


_shorten_the_agents_poll()
_run_the_shadowed_sitecustomize()
