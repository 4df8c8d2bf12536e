"""One rank of a warm worker: many trials in one long-lived ``accelerate launch`` group.

::

    accelerate launch <flags> -m wbsweep.warm_rank SWEEP_FILE --metric NAME --goal GOAL

Every rank connects to its worker (:mod:`wbsweep.warm`; the address is in
``WBSWEEP_WARM_ADDRESS``), loads the sweep file once, and then runs each trial
the worker sends it with :func:`wbsweep.lifecycle.run_trial`, exactly as a cold
``wbsweep.trial`` process would: the same params on every rank, a fresh
``TrainingArguments``, model and ``Trainer`` per trial, rank 0 alone opening the
trial's W&B run and reporting to the sweep's record. The process group, the
imports, the sweep file and the datasets (when ``datasets()`` takes no params)
outlive a trial; the model, the Trainer and the W&B run do not. After each trial
every rank frees what the trial held (``gc``, the CUDA cache) and tells the
worker how it ended and how much accelerator memory is still allocated.

A SIGTERM ends the trial as in cold mode (a checkpoint during training) and
then the process: the group is going away. The worker restarts a group whose
rank died or whose ranks stopped answering.
"""

from __future__ import annotations

import argparse
import gc
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from multiprocessing.connection import Client, Connection
from typing import Any

from wbsweep import procs
from wbsweep.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    TrialStopped,
    WbsweepError,
    debug_enabled,
)
from wbsweep.lifecycle import GOALS, rank, run_trial
from wbsweep.sweepfile import describe_error, load_sweep_file
from wbsweep.training import SweepFileTrainer
from wbsweep.trial import (
    _destroy_process_group,
    _fail,
    die_with_parent,
    run_settings,
    watch_launcher,
)
from wbsweep.wandb_run import TrialRun
from wbsweep.warm import ADDRESS_ENV, AUTHKEY_ENV, TrialEnded

__all__ = ["main"]


class _Inbox:
    """What the worker sends this rank, read in a thread so a stop lands mid-training."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.trials: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stop = threading.Event()
        threading.Thread(target=self._read, name="wbsweep-warm-inbox", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                kind, body = self._conn.recv()
            except (EOFError, OSError):
                self.trials.put(None)  # the worker is gone: leave
                return
            if kind == "trial":
                self.stop.clear()
                self.trials.put(body)
            elif kind == "stop":
                self.stop.set()
            elif kind == "exit":
                self.trials.put(None)
                return


class _TrialOutput:
    """This rank's stdout and stderr in the run's log while its trial runs, as cold trials."""

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._saved: list[int] = []

    def __enter__(self) -> None:
        if not self._path:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for stream in (1, 2):
            self._saved.append(os.dup(stream))
            os.dup2(fd, stream)
        os.close(fd)

    def __exit__(self, *exc: object) -> None:
        if not self._saved:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        for stream, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, stream)
            os.close(saved)
        self._saved = []


class _Uploads:
    """Rank 0's W&B runs whose last upload goes on while the next trial trains.

    ``run.finish()`` waits until the SDK has sent everything to the server; a
    warm worker's next trial need not wait for that. A run opened while others
    still finish (``TrialRun.alongside``) is finished in a thread of its own;
    the process waits for every one of them before it leaves or tears the SDK down.
    """

    #: How long a leaving rank waits for its last uploads (the group's close allows more).
    WAIT = 30.0

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []

    def finish(self, run: TrialRun, exit_code: int) -> None:
        if not run.alongside or exit_code in (EXIT_TERMINATED, EXIT_INTERRUPTED):
            # The process leaves after this trial (preempted, interrupted): no next
            # trial to let go first, and a second signal could cut a background finish.
            run.finish(exit_code)
            return
        self._threads = [t for t in self._threads if t.is_alive()]
        thread = threading.Thread(
            target=self._finish, args=(run, exit_code), name=f"wbsweep-finish-{run.id}"
        )
        thread.start()
        self._threads.append(thread)

    @staticmethod
    def _finish(run: TrialRun, exit_code: int) -> None:
        try:
            run.finish(exit_code)
        except Exception as exc:  # noqa: BLE001 - the next trial goes on; the log says why
            print(f"wbsweep.warm_rank: W&B run {run.id} did not finish: {exc}", file=sys.stderr)

    def wait(self, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]


def _set_trial_env(env: Mapping[str, str], previous: set[str], uploads: _Uploads) -> set[str]:
    """The trial's identity in ``os.environ`` (run id, sweep, store); the last trial's gone.

    The ``wandb`` SDK reads a sweep run's id, sweep and params from the
    environment once per setup and ignores ``wandb.init(id=...)`` in a sweep:
    so, as the SDK's own in-process agent does before each run, its setup is
    torn down and the next ``wandb.init`` reads this trial's environment.
    """
    for key in previous - set(env):
        os.environ.pop(key, None)
    os.environ.update(env)
    if rank() != 0:
        os.environ["WANDB_MODE"] = "disabled"  # nothing on this rank may create a W&B run
    elif previous and "wandb" in sys.modules:
        _wandb_reads_env(same_keys=previous == set(env), uploads=uploads)
    return set(env)


def _wandb_reads_env(*, same_keys: bool, uploads: _Uploads) -> None:
    """Make the ``wandb`` SDK's setup read this trial's environment.

    Updating the setup's settings from the environment keeps the SDK's service
    running (a new one costs about 0.2 s); where that is not possible (another
    SDK, or a variable the last trial had is gone), the setup is torn down.
    """
    wandb = sys.modules["wandb"]
    if same_keys:
        try:
            from wandb.sdk import wandb_setup

            wandb_setup.singleton().settings.update_from_env_vars(dict(os.environ))
            return
        except Exception:  # noqa: BLE001 - an SDK without it: the SDK's own way below
            pass
    uploads.wait()  # a torn-down SDK stops what it still sends
    wandb.teardown()


def _free_memory(trials: int) -> int | None:
    """Free what the last trial left; the accelerator bytes still allocated (None on CPU).

    After the first trial, what is left (modules, the kept datasets) lives as long
    as the process: frozen out of the collector's sight, so each later collection
    only walks what a trial made.
    """
    gc.collect()
    if trials == 1:
        gc.freeze()
    if "torch" not in sys.modules:
        return None
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        return int(torch.cuda.memory_allocated())
    return None


def _one_trial(
    setup: SweepFileTrainer,
    body: dict[str, Any],
    options: argparse.Namespace,
    inbox: _Inbox,
    conn: Connection,
    uploads: _Uploads,
) -> TrialEnded:
    from wbsweep.backends import queue_from_env

    run_id = str(body["run_id"])
    params = dict(body["params"])
    try:
        run_trial(
            setup,
            params,
            run_id=run_id,
            metric=options.metric,
            goal=options.goal,
            reporter=queue_from_env(),
            wandb=run_settings(setup.sweep, params),
            should_stop=inbox.stop.is_set if rank() == 0 else None,
            finishing=lambda: conn.send(("finishing", None)),
            finish_run=uploads.finish,
        )
        return TrialEnded(0)
    except TrialStopped:
        return TrialEnded(0, stopped=True)
    except procs.Terminated:
        _fail(procs.TERMINATED_REASON, all_ranks=False)
        return TrialEnded(EXIT_TERMINATED, procs.TERMINATED_REASON, preempted=True)
    except KeyboardInterrupt:  # Ctrl-C, passed on by the launcher: the group is going away
        _fail(procs.INTERRUPTED_REASON, all_ranks=False)
        return TrialEnded(EXIT_INTERRUPTED, procs.INTERRUPTED_REASON, stopped=True)
    except WbsweepError as exc:
        return _failed(exc, str(exc), exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - user code: one line, the group goes on
        return _failed(exc, describe_error(exc, setup.sweep.path), EXIT_FAILED)


def _failed(exc: BaseException, reason: str, code: int) -> TrialEnded:
    if debug_enabled():
        traceback.print_exc()
    _fail(reason)  # the trial's error line, as a cold rank writes it
    where = "" if rank() == 0 else f"[rank {rank()}] "
    return TrialEnded(code, f"{where}{reason}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wbsweep.warm_rank", description="One rank of a warm worker (many trials)."
    )
    parser.add_argument("sweep_file")
    parser.add_argument("--metric", default="objective")
    parser.add_argument("--goal", choices=GOALS, default="minimize")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the trials the worker sends until it says exit; the process exit code."""
    die_with_parent()
    watch_launcher()
    procs.raise_on_sigterm()
    options = _parser().parse_args(argv)
    conn = Client(os.environ[ADDRESS_ENV], authkey=bytes.fromhex(os.environ[AUTHKEY_ENV]))
    try:
        sweep = load_sweep_file(os.path.abspath(options.sweep_file))
    except WbsweepError as exc:
        conn.send(("hello", {"rank": rank(), "error": str(exc)}))
        return exc.exit_code
    conn.send(("hello", {"rank": rank(), "pid": os.getpid()}))
    inbox = _Inbox(conn)
    setup = SweepFileTrainer(sweep, reuse_datasets=True)
    uploads = _Uploads()
    try:
        return _serve(setup, options, inbox, conn, uploads)
    finally:
        uploads.wait()


def _serve(
    setup: SweepFileTrainer,
    options: argparse.Namespace,
    inbox: _Inbox,
    conn: Connection,
    uploads: _Uploads,
) -> int:
    env_keys: set[str] = set()
    trials = 0
    try:
        while (body := inbox.trials.get()) is not None:
            env_keys = _set_trial_env(body["env"], env_keys, uploads)
            with _TrialOutput(body.get("log")):
                ended = _one_trial(setup, body, options, inbox, conn, uploads)
            trials += 1
            # The end first: the worker records it and claims the next run meanwhile.
            conn.send(("end", ended.as_message()))
            conn.send(("memory", {"allocated": _free_memory(trials)}))
            if ended.preempted or procs.PREEMPTION.requested:
                # SIGTERM came during the trial: the group is going away (a checkpoint
                # is saved), or its launcher is stopping it because another rank died.
                return EXIT_TERMINATED
            if ended.exit_code == EXIT_INTERRUPTED:
                return EXIT_INTERRUPTED
    except procs.Terminated:
        # Between trials: the launcher stops the group (another rank died) or the node
        # goes away. Leave now; a group a rank left cannot be torn down politely.
        return EXIT_TERMINATED
    except KeyboardInterrupt:  # Ctrl-C between trials, passed on by the launcher
        return EXIT_INTERRUPTED
    _destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
