"""Another backend's offline W&B runs onto a W&B server, in a W&B sweep that holds them.

The upload is the real ``wandb sync`` (it marks each uploaded run directory
with a ``.wandb.synced`` file and skips it the next time); the sweep is made
with ``wandb.sweep(..., prior_runs=...)``, the SDK's own way to attach runs
that exist already, and later runs join it through ``wandb sweep --update
PATH -R RUN``. Which W&B sweep holds a local sweep's runs is read back from the
runs themselves, so a second sync, from any machine, finds the same sweep.

>>> sync_argv("wandb", ["wandb/offline-run-1-a"], entity="e", project="p")
['wandb', 'sync', '--entity', 'e', '--project', 'p', 'wandb/offline-run-1-a']
>>> mirrored_state(SweepState.RUNNING), mirrored_state(SweepState.CANCELED)
(<SweepState.PAUSED: 'PAUSED'>, <SweepState.CANCELED: 'CANCELED'>)
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import yaml

from wbsweep.backends._wandb_auth import api_key, child_env
from wbsweep.errors import WbsweepError
from wbsweep.states import SweepState

__all__ = ["attach_argv", "mirrored_state", "sweep_config", "sync_argv", "sync_env", "unsynced"]

#: Sweep-config keys that say where a sweep lives: the sync's ``--project``/``--entity`` do.
_PLACE_KEYS = ("project", "entity")
_TIMEOUT = 600


def sync_argv(wandb: str, run_dirs: Sequence[str], *, entity: str, project: str) -> list[str]:
    """``wandb sync`` of ``run_dirs`` into ``entity/project``."""
    return [wandb, "sync", "--entity", entity, "--project", project, *run_dirs]


def attach_argv(wandb: str, sweep_path: str, run_ids: Sequence[str], config_file: str) -> list[str]:
    """``wandb sweep --update`` that attaches ``run_ids`` to the sweep (its config unchanged)."""
    attach = [token for run_id in run_ids for token in ("-R", run_id)]
    return [wandb, "sweep", "--update", sweep_path, *attach, config_file]


def sync_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a ``wandb`` child that uploads: online, joined to no run."""
    env = child_env(environ)
    for name in ("WANDB_RUN_ID", "WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH"):
        env.pop(name, None)
    env["WANDB_MODE"] = "online"  # an uploader in an offline shell still uploads
    return env


def sweep_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The W&B sweep's config: the local sweep's, less where it lived."""
    return {k: v for k, v in config.items() if k not in _PLACE_KEYS}


def mirrored_state(state: SweepState) -> SweepState:
    """The W&B sweep's state for a local sweep in ``state``.

    A finished or canceled sweep is so on W&B too; one that still runs here is
    paused there, so no ``wandb agent`` starts its runs twice.
    """
    return state if state.terminal else SweepState.PAUSED


def unsynced(run_dirs: Sequence[str]) -> list[str]:
    """The run directories ``wandb sync`` has not uploaded yet (no ``.wandb.synced`` file)."""
    return [d for d in run_dirs if not any(Path(d).glob("*.wandb.synced"))]


def run_wandb(argv: list[str], *, what: str) -> str:
    """Run a ``wandb`` command; its output, or one line naming ``what`` failed (never the key)."""
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=sync_env(os.environ),
            timeout=_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WbsweepError(f"{what} did not complete: {_scrub(str(exc))}") from None
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise WbsweepError(f"{what} failed: {_scrub(last_line(output, result.returncode))}")
    return output


def with_config_file(config: Mapping[str, Any]) -> IO[str]:
    """The sweep config as a YAML file, for ``wandb sweep --update``."""
    handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="wbsweep-sync-")  # noqa: SIM115
    yaml.safe_dump(dict(config), handle, sort_keys=False)
    handle.flush()
    return handle


def last_line(output: str, code: int | None = None) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [f"exit {code}"])[-1]


def _scrub(text: str) -> str:
    key = api_key()
    return text.replace(key, "***") if key else text
