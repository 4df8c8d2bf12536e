"""What every trial of a sweep runs first, on whichever node: find this node's settings,
then become ``accelerate launch``.

A sweep's ``command`` is ``${env} ${interpreter} -m wbsweep.launch ${program}
--metric M --goal G SHAPE ${args_json_file}`` (SHAPE: :mod:`wbsweep.shape`),
so the same trial runs under ``wbsweep agent``, under a plain ``wandb agent ID``
(as W&B's docs and most SLURM scripts start it) and under the local worker. This launcher:

* finds the sweep file: ``WBSWEEP_SWEEP_FILE`` (``wbsweep agent --sweep-file``),
  else the sweep's ``program``, relative to the working directory as W&B's
  ``program`` is; a node without it gets one line saying where it looked;
* finds the accelerate config: the one ``wbsweep agent`` wrote for its worker
  (``WBSWEEP_ACCELERATE_CONFIG``), else one made here from the user's default
  accelerate config in the sweep's recorded shape (its ranks on the first GPUs
  this node sees, else on CPU), written beside the trial's params file;
* adds the sweep's recorded ``accelerate launch`` flags;
* with ``wbsweep agent --nodes``: sets this node's part of the group
  (:mod:`wbsweep.nodes`), and on node 0 publishes the run to the other nodes;
* then replaces itself (same pid) with ``accelerate launch ... -m wbsweep.trial``
  (through :mod:`wbsweep.accelerate`), so the ranks' watch of their launcher,
  and their parent-death signal, hold.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from wbsweep.errors import EXIT_BAD_INPUT, UsageError, WbsweepError
from wbsweep.nodes import TRIAL_ENV, NodeGroup, publish_trial
from wbsweep.shape import TrialShape, parse_shape
from wbsweep.slots import (
    ACCELERATE_CONFIG_ENV,
    SWEEP_FILE_ENV,
    WorkerSlot,
    accelerate_config,
    free_port,
    user_accelerate_config,
    visible_gpus,
)

__all__ = ["launch_argv", "main", "node_config", "resolve_sweep_file", "this_node"]


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


def node_config(
    environ: Mapping[str, str], shape: TrialShape | None = None
) -> tuple[dict[str, object], tuple[str, ...]]:
    """The accelerate config when no ``wbsweep agent`` wrote one, and the GPUs it uses.

    The sweep's recorded ``shape``: its ranks on the first GPUs this node sees,
    else on CPU; a sweep from before shapes were recorded runs on every GPU,
    or 1 CPU rank. The user's default accelerate config is kept.

    Raises:
        UsageError: This node cannot run the recorded shape.
    """
    shape = shape or TrialShape(recorded=False)
    gpus = tuple(visible_gpus(environ))
    if not shape.recorded:
        ranks = len(gpus) or 1
    elif len(gpus) >= shape.ranks:
        ranks, gpus = shape.ranks, gpus[: shape.ranks]
    elif gpus or shape.gpus:
        raise UsageError(
            f"the sweep runs each trial on {shape.ranks} GPU(s), but this node sees "
            f"{len(gpus)} (run wbsweep agent --gpus-per-trial/--processes-per-trial "
            "to run it here in another shape)"
        )
    else:
        ranks = shape.ranks
    user = user_accelerate_config(None, environ)
    user = shape.accelerate_config(user)
    return accelerate_config(WorkerSlot(0, gpus, ranks, free_port()), user), gpus


def this_node(
    environ: Mapping[str, str], shape: TrialShape
) -> tuple[str, dict[str, Any] | None, dict[str, str]]:
    """This node's accelerate config for a trial: ``(file, config to write, env to set)``.

    The file ``wbsweep agent`` wrote for its worker, else (a plain ``wandb
    agent``) a config to write, made by :func:`node_config`, and the devices
    the trial may see.

    Raises:
        UsageError: This node cannot run the recorded shape.
    """
    config_file = environ.get(ACCELERATE_CONFIG_ENV, "")
    if Path(config_file).is_file():
        return config_file, None, {}
    config, gpus = node_config(environ, shape)
    if config.get("use_cpu"):
        return "", config, {"ACCELERATE_USE_CPU": "true"}
    return "", config, {"CUDA_VISIBLE_DEVICES": ",".join(gpus)}


def launch_argv(
    config_file: str,
    sweep_file: str,
    rest: Sequence[str],
    extra: Sequence[str] = (),
    module: str = "wbsweep.trial",
) -> list[str]:
    """``accelerate launch`` (this install's) running ``module`` on every rank.

    ``extra`` are the sweep's recorded ``accelerate launch`` flags; ``module``
    is ``wbsweep.trial`` (one trial) or ``wbsweep.warm_rank`` (a warm worker's).
    The launcher is accelerate's, run by :mod:`wbsweep.accelerate` so that a
    SIGTERM leaves a single rank its grace period.

    >>> launch_argv("c.yaml", "s.py", ["--metric", "m"])[1:6]
    ['-m', 'wbsweep.accelerate', 'launch', '--config_file', 'c.yaml']
    """
    return [
        sys.executable, "-m", "wbsweep.accelerate", "launch", "--config_file", config_file,
        *extra, "-m", module, sweep_file, *rest,
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
        shape, rest = parse_shape(options.rest)
        sweep_file = resolve_sweep_file(options.sweep_file, environ, os.getcwd())
        group = NodeGroup.from_env(environ)
        config_file, config, env_set = this_node(environ, shape)
        os.environ.update(env_set)
        if group is not None:
            # One trial across nodes: this node's part, in the group's process group.
            if config is None:
                config = dict(yaml.safe_load(Path(config_file).read_text(encoding="utf-8")))
            config = group.machine_settings(config)
            if group.rank == 0 and TRIAL_ENV not in environ:
                number = publish_trial(group, options.sweep_file, options.rest[:-1], rest[-1])
                os.environ[TRIAL_ENV] = str(number)
        if config is not None:
            params = Path(rest[-1]) if rest else Path(sweep_file)
            written = params.with_name(params.stem + ".accelerate.yaml")
            written.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
            config_file = str(written)
    except (WbsweepError, OSError) as exc:
        code = exc.exit_code if isinstance(exc, WbsweepError) else EXIT_BAD_INPUT
        print(f"wbsweep.launch: error: {exc}", file=sys.stderr, flush=True)
        return code
    command = launch_argv(config_file, sweep_file, rest, shape.accelerate_args)
    sys.stdout.flush()
    os.execv(command[0], command)
    return 0  # not reached: execv replaces this process


if __name__ == "__main__":
    raise SystemExit(main())
