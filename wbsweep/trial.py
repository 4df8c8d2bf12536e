"""The trial entry point, run on every rank under ``accelerate launch``.

::

    accelerate launch <flags> -m wbsweep.trial SWEEP_FILE \\
        --metric NAME --goal minimize|maximize PARAMS_JSON_FILE

This module owns the process only: arguments, the params file, the run id,
signals, the launcher's death, the exit code. The trial itself is
:func:`wbsweep.lifecycle.run_trial`. Every rank reads the params file, so all
ranks train with the same hyperparameters without a broadcast.

Environment read:

* ``RANK`` (set by the launcher): which rank this is; absent means 0.
* ``WANDB_RUN_ID``, ``WANDB_SWEEP_ID``: the run (and sweep) to join.
* ``WANDB_PROJECT``: the run's project (``wandb agent`` sets the sweep's); else ``SWEEP``'s.
* ``WBSWEEP_STORE``: the local store rank 0 reports to.
* ``WBSWEEP_DEBUG=1``: print full tracebacks on failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any

from wbsweep import procs
from wbsweep.backends import queue_from_env, trial_label
from wbsweep.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    TrialError,
    WbsweepError,
    debug_enabled,
)
from wbsweep.lifecycle import GOALS, rank, run_trial
from wbsweep.nodes import TRIAL_ENV, NodeGroup, first_failure, record_end, watch_peers
from wbsweep.sweepfile import SweepFile, describe_error, load_sweep_file
from wbsweep.wandb_run import RunSettings

__all__ = ["main", "read_params", "run_settings"]

# Read before anything slow: compared after PR_SET_PDEATHSIG to catch a
# launcher that died while this process was still starting.
_PARENT_AT_START = os.getppid()


def read_params(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the params JSON file (W&B's ``${args_json_file}``): an object of param values."""
    try:
        with open(path, encoding="utf-8") as handle:
            params = json.load(handle)
    except OSError as exc:
        raise TrialError(f"cannot read params file {os.fspath(path)}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise TrialError(f"params file {os.fspath(path)} is not JSON: {exc}") from exc
    if not isinstance(params, dict):
        raise TrialError(f"params file {os.fspath(path)} must hold a JSON object")
    return params


def run_settings(sweep: SweepFile, params: dict[str, Any]) -> RunSettings:
    """How rank 0 opens the trial's W&B run: named and tagged for its sweep (cold and warm)."""
    if rank() != 0 or os.environ.get("WANDB_MODE") == "disabled":
        return RunSettings()
    return RunSettings().labelled(trial_label(), sweep.hp_name, params)


def _derived_run_id(*parts: object) -> str:
    """A run id every rank computes alike: same inputs, same launcher parent."""
    digest = hashlib.sha256("|".join(map(str, (*parts, _PARENT_AT_START))).encode()).digest()
    number = int.from_bytes(digest[:8], "big")
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    chars = []
    for _ in range(8):
        number, index = divmod(number, 36)
        chars.append(alphabet[index])
    return "".join(chars)


def _params_run_id(params_path: str) -> str:
    """``WANDB_RUN_ID`` (an agent's run), else an id derived from the params file."""
    explicit = os.environ.get("WANDB_RUN_ID")
    if explicit:
        return explicit
    stat = os.stat(params_path)
    return _derived_run_id(os.path.abspath(params_path), stat.st_ino, stat.st_mtime_ns)


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this rank when its parent (the launcher) dies.

    This is what makes a SIGKILLed ``accelerate launch`` leave no rank behind.
    Exits at once if the parent is already gone.
    """
    procs.die_with_parent(signal.SIGTERM)
    # The parent may have died before prctl took effect; then we were reparented.
    if os.getppid() != _PARENT_AT_START:
        raise SystemExit(EXIT_TERMINATED)


def watch_launcher(poll: float = 1.0, grace: float = 30.0) -> None:
    """End this trial's launcher once it is orphaned: the agent that started it died.

    ``wandb agent`` starts a run's command from a thread, with no parent-death
    signal, so a SIGKILLed ``wandb agent`` would leave the launcher (and so every
    rank) running. A thread here notices the launcher's new parent, sends it
    SIGTERM (its ranks then get theirs) and SIGKILL after ``grace`` seconds.
    Does nothing when this process was not started by a launcher.
    """
    launcher = os.getppid()
    agent = procs.parent_of(launcher)
    if agent is None or not _is_launcher(launcher):
        return

    # Any rank's watch may end the launcher first: each asks at its own end.
    procs.PREEMPTION.agent_lost = lambda: procs.parent_of(launcher) != agent

    def watch() -> None:
        while (parent := procs.parent_of(launcher)) == agent:
            time.sleep(poll)
        if parent is None:
            return  # the launcher is gone: this rank's parent-death signal follows
        procs.signal_pid(launcher, signal.SIGTERM)
        time.sleep(grace)
        procs.signal_pid(launcher, signal.SIGKILL)

    threading.Thread(target=watch, name="wbsweep-watch-launcher", daemon=True).start()


def _is_launcher(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().decode(errors="replace").split("\0")
    except OSError:
        return False
    names = {os.path.basename(arg) for arg in argv[:3]}
    return bool(names & {"accelerate", "torchrun", "wbsweep.accelerate"}) or (
        "torch.distributed.run" in argv
    )


def _destroy_process_group() -> None:
    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    try:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - teardown must not hide the trial's own outcome
        pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wbsweep.trial", description="Run one trial of a sweep (every rank)."
    )
    parser.add_argument("sweep_file", help="the sweep file (Python)")
    parser.add_argument("params_file", help="JSON object of this trial's params")
    parser.add_argument("--metric", default="objective", help="sweep metric name")
    parser.add_argument("--goal", choices=GOALS, default="minimize")
    return parser


#: The last error line this rank said (what another node's ranks report as the reason).
_LAST_ERROR: list[str | None] = [None]


def _fail(message: str, *, all_ranks: bool = True) -> None:
    _LAST_ERROR[0] = message
    # Other ranks speak too: when rank 1 fails first, the launcher SIGTERMs
    # rank 0 before it reaches the same error, and rank 1's line is the reason.
    if rank() == 0:
        print(f"wbsweep.trial: error: {message}", file=sys.stderr, flush=True)
    elif all_ranks or debug_enabled():
        print(f"wbsweep.trial: error: [rank {rank()}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run one trial from the command line; returns the process exit code."""
    die_with_parent()
    watch_launcher()
    procs.raise_on_sigterm()
    group, number = NodeGroup.from_env(), int(os.environ.get(TRIAL_ENV, "0") or 0)
    if group is None or not number:
        return _main(argv)
    # One trial across nodes: leave when another node's part ends badly; say how ours ended.
    watch_peers(group, number)
    code = _main(argv)
    if code or os.environ.get("LOCAL_RANK", "0") in ("", "0"):
        first = record_end(group, number, code, _LAST_ERROR[0])
        if code not in (0, EXIT_TERMINATED) and not first:
            cause = first_failure(group, number)
            if cause:
                _fail(cause)  # why the trial failed, not the lost connection seen here
    return code


def _main(argv: list[str] | None) -> int:
    options = _parser().parse_args(argv)
    debug = debug_enabled()
    sweep_path = os.path.abspath(options.sweep_file)
    if rank() != 0:
        # Belt and braces: WandbCallback only inits on rank 0, but nothing
        # on this rank may create a W&B run.
        os.environ["WANDB_MODE"] = "disabled"
    try:
        sweep = load_sweep_file(sweep_path)
        params = read_params(options.params_file)
        run_trial(
            sweep,
            params,
            run_id=_params_run_id(options.params_file),
            metric=options.metric,
            goal=options.goal,
            reporter=queue_from_env(),
            wandb=run_settings(sweep, params),
        )
        return 0
    except procs.Terminated:
        # Only rank 0 says so: every rank gets the signal, one line is enough.
        _fail(procs.TERMINATED_REASON, all_ranks=False)
        return EXIT_TERMINATED
    except KeyboardInterrupt:  # the launcher passed Ctrl-C on: one line, no traceback
        _fail(procs.INTERRUPTED_REASON, all_ranks=False)
        return EXIT_INTERRUPTED
    except WbsweepError as exc:
        if debug:
            traceback.print_exc()
        _fail(str(exc))
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - user code: one line unless debugging
        if debug:
            traceback.print_exc()
        _fail(describe_error(exc, sweep_path))
        return EXIT_FAILED
    finally:
        _destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
