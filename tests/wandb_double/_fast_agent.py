"""The environment that makes a child's sweep agent heartbeat every second.

See ``fast_agent/sitecustomize.py``: only the agent's poll period changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

#: Seconds between a sweep agent's heartbeats here (the SDK's own is 5 s).
AGENT_POLL = "1"
POLL_ENV = "WANDB_DOUBLE_AGENT_POLL"
FAST_AGENT = str(Path(__file__).resolve().parent / "fast_agent")


def fast_agent_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``PYTHONPATH`` (``environ``'s, after ``fast_agent/``) and the poll period."""
    kept = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != FAST_AGENT]
    return {POLL_ENV: AGENT_POLL, "PYTHONPATH": os.pathsep.join([FAST_AGENT, *kept])}
