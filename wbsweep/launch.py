"""What every trial of a sweep runs first, on whichever node: find this node's settings,
then become ``accelerate launch``.

A sweep's ``command`` is ``${env} ${interpreter} -m wbsweep.launch ${program}
--metric M --goal G ${args_json_file}``, so the same trial runs under
``wbsweep agent``, under a plain ``wandb agent ID`` (as W&B's docs and most
SLURM scripts start it) and under the local worker. This launcher:

* finds the sweep file: ``WBSWEEP_SWEEP_FILE`` (``wbsweep agent --sweep-file``),
  else the sweep's ``program``, relative to the working directory as W&B's
  ``program`` is; a node without it gets one line saying where it looked;
* finds the accelerate config: the one ``wbsweep agent`` wrote for its worker
  (``WBSWEEP_ACCELERATE_CONFIG``), else one made here from the user's default
  accelerate config with this node's GPUs (all it sees: one rank each) or one
  CPU rank, written beside the trial's params file;
* then replaces itself (same pid) with ``accelerate launch ... -m wbsweep.trial``,
  so the ranks' watch of their launcher, and their parent-death signal, hold.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from wbsweep.errors import EXIT_BAD_INPUT, UsageError, WbsweepError
from wbsweep.slots import (
    ACCELERATE_CONFIG_ENV,
    SWEEP_FILE_ENV,
    WorkerSlot,
    accelerate_config,
    free_port,
    user_accelerate_config,
    visible_gpus,
)

__all__ = ["launch_argv", "main", "node_config", "resolve_sweep_file"]


def resolve_sweep_file(recorded: str, environ: Mapping[str, str], cwd: str) -> str:
    """The sweep file on this node: the override, else ``recorded`` against ``cwd``.

    Raises:
        UsageError: No such file (exit 10); the message says where it looked.
    """
    override = environ.get(SWEEP_FILE_ENV)
    path = Path(override or recorded)
    if not path.is_absolute():
        path = Path(cwd) / path
    if not path.is_file():
        how = f"{SWEEP_FILE_ENV}={override}" if override else f"{recorded!r} in {cwd}"
        raise UsageError(
            f"sweep file not found: looked for {how} (start the agent in the directory "
            "the sweep was created in, or give wbsweep agent --sweep-file PATH)"
        )
    return str(path)


def node_config(environ: Mapping[str, str]) -> dict[str, object]:
    """The accelerate config when no ``wbsweep agent`` wrote one: every GPU, or 1 CPU rank."""
    gpus = tuple(visible_gpus(environ))
    slot = WorkerSlot(0, gpus, len(gpus) or 1, free_port())
    return accelerate_config(slot, user_accelerate_config(None, environ))


def launch_argv(config_file: str, sweep_file: str, rest: Sequence[str]) -> list[str]:
    """``accelerate launch`` (this install's) running ``wbsweep.trial`` on every rank."""
    beside = Path(sys.executable).parent / "accelerate"
    accelerate = str(beside) if beside.exists() else shutil.which("accelerate") or "accelerate"
    return [
        accelerate, "launch", "--config_file", config_file,
        "-m", "wbsweep.trial", sweep_file, *rest,
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="wbsweep.launch", description="Run one trial of a sweep on this node."
    )
    parser.add_argument("sweep_file", help="the sweep's program, as recorded")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="wbsweep.trial's arguments")
    options = parser.parse_args(argv)
    environ = dict(os.environ)
    try:
        sweep_file = resolve_sweep_file(options.sweep_file, environ, os.getcwd())
        config_file = environ.get(ACCELERATE_CONFIG_ENV, "")
        if not Path(config_file).is_file():
            # Plain `wandb agent`: this node's own shape, beside the params file.
            params = Path(options.rest[-1]) if options.rest else Path(sweep_file)
            written = params.with_name(params.stem + ".accelerate.yaml")
            config = node_config(environ)
            written.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
            config_file = str(written)
            if config.get("use_cpu"):
                os.environ["ACCELERATE_USE_CPU"] = "true"
    except (WbsweepError, OSError) as exc:
        code = exc.exit_code if isinstance(exc, WbsweepError) else EXIT_BAD_INPUT
        print(f"wbsweep.launch: error: {exc}", file=sys.stderr, flush=True)
        return code
    command = launch_argv(config_file, sweep_file, options.rest)
    sys.stdout.flush()
    os.execv(command[0], command)
    return 0  # not reached: execv replaces this process


if __name__ == "__main__":
    raise SystemExit(main())
