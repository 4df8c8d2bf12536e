"""The node supervisor behind ``wbsweep agent``.

It runs the plan of :mod:`wbsweep.slots` (how many workers, what each sees):
writes each worker's ``accelerate`` config, starts the workers as process
groups, restarts one a stray signal killed, keeps the backend's keeper beside
them, and stops them as a whole on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

from wbsweep import procs
from wbsweep.backends.base import DEFAULT_MAX_FAILURES, Backend, DriveOptions
from wbsweep.errors import (
    EXIT_FAILED,
    EXIT_GAVE_UP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    WbsweepError,
)
from wbsweep.procs import PREEMPT_MARK_ENV
from wbsweep.shape import OVERRIDE_ENV, WORKER_ENV
from wbsweep.slots import (
    ACCELERATE_CONFIG_ENV,
    SWEEP_FILE_ENV,
    WorkerSlot,
    accelerate_config,
    free_port,
    plan_slots,
    threads_per_rank,
    visible_gpus,
    worker_env,
    write_accelerate_configs,
)

__all__ = [
    "ACCELERATE_CONFIG_ENV",
    "MAX_RESTARTS",
    "Agent",
    "WorkerSlot",
    "accelerate_config",
    "free_port",
    "plan_slots",
    "run_agent",
    "visible_gpus",
    "worker_argv",
    "worker_env",
    "worker_name",
    "write_accelerate_configs",
]

#: How many times the agent starts again a worker that a signal killed.
MAX_RESTARTS = 10


class Agent:
    """Starts one worker process group per slot and stops them as a whole."""

    def __init__(
        self,
        worker_argv: Callable[[WorkerSlot], list[str]],
        slots: Sequence[WorkerSlot],
        *,
        stagger: float = 0.0,
        grace: float = 40.0,
        log: Callable[[str], None] | None = None,
        extra_env: Mapping[str, str] | None = None,
        keeper: Sequence[str] | None = None,
        outlook: Callable[[], str] | None = None,
        poll: float = 5.0,
        accelerate: Mapping[str, Any] | None = None,
        output: Callable[[WorkerSlot], str] | None = None,
        display: contextlib.AbstractContextManager[Any] | None = None,
    ) -> None:
        self.worker_argv = worker_argv
        #: Where each worker's own output goes (a file per worker), else this terminal.
        self.output = output
        #: Shown while the workers run (the live progress), in place of their output.
        self.display = display
        self._files: list[IO[bytes]] = []
        #: The backend's keeper (reruns crashed runs) started beside the workers.
        self.keeper_argv = list(keeper) if keeper else None
        self._keeper: subprocess.Popen[bytes] | None = None
        #: Asked when every worker found nothing left (see ``Backend.outlook``).
        self.outlook = outlook
        #: The user's accelerate config, which each worker's config keeps.
        self.accelerate = dict(accelerate or {})
        self.poll = poll
        self.extra_env = dict(extra_env or {})
        self.slots = list(slots)
        self.stagger = stagger
        self.grace = grace
        self.log = log or (lambda line: print(line, flush=True))
        self._procs: list[subprocess.Popen[bytes]] = []
        self._signals = 0
        #: Leaders of the process groups below the workers (trials `wandb agent` started).
        self._below: set[int] = set()
        self._first_signal: int | None = None
        self._preempt_mark: Path | None = None

    def run(self) -> int:
        """Run every worker to its end; the node's exit code.

        0 when every worker ended because the sweep had nothing left for it;
        130 (Ctrl-C) or 143 (SIGTERM) when a signal stopped them; 9 when a
        worker gave up after too many failed trials in a row; else 1.
        """
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        workdir = Path(tempfile.mkdtemp(prefix="wbsweep-agent-"))
        self._preempt_mark = workdir / "preempting"
        shown = contextlib.ExitStack()
        try:
            configs = write_accelerate_configs(self.slots, workdir, self.accelerate)
            threads = threads_per_rank(self.slots, os.environ)
            if threads is not None:
                self.log(f"{threads} CPU thread(s) per rank (set OMP_NUM_THREADS to choose)")
            envs: list[dict[str, str]] = []
            for slot, config in zip(self.slots, configs, strict=False):
                if self._signals:
                    break
                if slot.index and self.stagger:
                    time.sleep(self.stagger)
                env = {**worker_env(slot, config, os.environ, threads), **self.extra_env}
                env[PREEMPT_MARK_ENV] = str(self._preempt_mark)
                env[WORKER_ENV] = worker_name(slot)
                self.log(
                    f"worker {slot.index}: {slot.device}, {slot.num_processes} "
                    f"process{'es' if slot.num_processes > 1 else ''} per trial"
                    + (f"; its output: {self.output(slot)}" if self.output is not None else "")
                )
                envs.append(env)
                self._procs.append(self._start(slot, env))
                if self.display is not None and len(self._procs) == 1:
                    shown.enter_context(self.display)
            if self.keeper_argv and envs and not self._signals:
                keeper_out = self._output_file(self.slots[0], "keeper") if self.output else None
                self._keeper = procs.start_group(
                    self.keeper_argv, env=envs[0], stdout=keeper_out, stderr=keeper_out
                )
            codes = self._wait_all(envs)
            self._say_why(codes)
        finally:
            try:
                self._stop_all()
            finally:
                shown.close()
                for file in self._files:
                    file.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            shutil.rmtree(workdir, ignore_errors=True)
        if self._signals:
            return EXIT_TERMINATED if self._first_signal == signal.SIGTERM else EXIT_INTERRUPTED
        if all(code == EXIT_OK for code in codes):
            return EXIT_OK
        return EXIT_GAVE_UP if EXIT_GAVE_UP in codes else EXIT_FAILED

    def _wait_all(self, envs: Sequence[dict[str, str]]) -> list[int]:
        """Wait for every worker; one killed by a signal we did not send starts again.

        The OOM killer or a stray ``kill -9`` takes a worker, not the node: its
        run is noticed as crashed (heartbeats) and rerun, and the node keeps its
        workers, up to ``MAX_RESTARTS`` times each.
        """
        restarts = [0] * len(self._procs)
        while True:
            codes = [proc.poll() for proc in self._procs]
            for index, code in enumerate(codes):
                killed = code is not None and code < 0 and not self._signals
                if killed and restarts[index] < MAX_RESTARTS:
                    restarts[index] += 1
                    name = procs.signal_name(-(code or 0))
                    self.log(f"worker {index} was killed ({name}); starting it again")
                    self._procs[index] = self._start(self.slots[index], envs[index])
                    codes[index] = None
            if all(code is not None for code in codes):
                done = [int(code) for code in codes if code is not None]
                if not self._more_to_run(done):
                    return done
                self.log("runs were handed back to the sweep; starting the workers again")
                for index, slot in enumerate(self.slots):
                    self._procs[index] = self._start(slot, envs[index])
            time.sleep(0.5)

    def _say_why(self, codes: Sequence[int]) -> None:
        """A worker that ended badly, its output in a file: its last line, here."""
        if self.output is None or self._signals:
            return
        for slot, code in zip(self.slots, codes, strict=False):
            if code == EXIT_OK:
                continue
            path = Path(self.output(slot))
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                lines = []
            last = next((line.strip() for line in reversed(lines) if line.strip()), "")
            self.log(f"worker {slot.index} ended with exit {code}: {last or 'no output'} ({path})")

    def _start(self, slot: WorkerSlot, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        """Start the slot's worker, its output to its own file when there is one."""
        out = self._output_file(slot) if self.output is not None else None
        return procs.start_group(
            self.worker_argv(slot),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
        )

    def _output_file(self, slot: WorkerSlot, name: str | None = None) -> IO[bytes]:
        """The worker's output file (or ``name``'s beside it), appended to, kept open."""
        assert self.output is not None
        path = Path(self.output(slot))
        if name is not None:
            path = path.with_name(f"{name}.log")
        path.parent.mkdir(parents=True, exist_ok=True)
        file = path.open("ab")
        self._files.append(file)
        return file

    def _more_to_run(self, codes: Sequence[int]) -> bool:
        """Whether workers that all ended well should start again: wait while runs may crash."""
        if self.outlook is None or self._signals or any(code != EXIT_OK for code in codes):
            return False
        said = False
        while not self._signals:
            try:
                outlook = self.outlook()
            except WbsweepError as exc:
                self.log(f"cannot read the sweep ({exc}); leaving")
                return False
            if outlook != "wait":
                return outlook == "run"
            if not said:
                self.log("nothing left to start; waiting while other runs of the sweep run")
                said = True
            time.sleep(self.poll)
        return False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._first_signal is None:
            self._first_signal = signum
        # First signal: each worker gets it too (SIGTERM: preempted, run again;
        # Ctrl-C: stopped) and ends its trial gracefully. Second: kill now.
        sig = signum if self._signals == 1 else signal.SIGKILL
        if signum == signal.SIGTERM and self._preempt_mark is not None:
            self._preempt_mark.touch()  # before the trials hear of it
        if self._signals == 1:
            self.log("stopping workers (again to kill at once)")
        for proc in self._procs:
            if proc.poll() is None:
                self._below.update(procs.other_groups(proc.pid))
                procs.signal_group(proc.pid, sig)
        for pid in self._below:  # a trial that `wandb agent` started in its own session
            procs.signal_pid(pid, sig)

    def _stop_all(self) -> None:
        if self._keeper is not None and self._keeper.poll() is None:
            procs.stop_group(self._keeper, grace=5)
        deadline = time.monotonic() + self.grace
        told = set(self._below)  # signalled already: a second SIGTERM would cut a checkpoint
        for proc in self._procs:
            if proc.poll() is None:
                self._below.update(procs.other_groups(proc.pid))
                procs.stop_group(proc, grace=max(0.0, deadline - time.monotonic()))
        # What the workers left in other sessions gets the rest of the grace period.
        for pid in self._below - told:
            procs.signal_pid(pid, signal.SIGTERM)
        while any(procs.alive(pid) for pid in self._below) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in self._below:
            for left in [pid, *procs.descendants(pid)]:
                if procs.alive(left):
                    procs.signal_pid(left, signal.SIGKILL)


def worker_argv(
    backend: Backend,
    sweep_id: str,
    slot: WorkerSlot,
    count: int | None = None,
    *,
    warm: bool = False,
) -> list[str]:
    """The argv of one worker on this node, as the backend starts its workers."""
    return backend.worker_argv(sweep_id, worker_name(slot), count, warm=warm)


def worker_name(slot: WorkerSlot) -> str:
    """The name of the slot's worker, recorded with each run it takes: ``host-w0``."""
    return f"{socket.gethostname()}-w{slot.index}"


def run_agent(
    backend: Backend,
    sweep_id: str,
    slots: Sequence[WorkerSlot],
    *,
    limits: DriveOptions | None = None,
    accelerate: Mapping[str, Any] | None = None,
    sweep_file: str | None = None,
    overridden: bool = False,
    env: Mapping[str, str] | None = None,
    warm: bool = False,
    progress: bool = False,
    console: Any = None,
) -> int:
    """Run this node's workers for ``sweep_id`` until the sweep has nothing left.

    ``limits`` (failures in a row, retries) reach each worker through its
    environment; ``accelerate`` is the user's accelerate config, kept in each
    worker's; ``sweep_file`` replaces the sweep's own path on this node;
    ``overridden`` says the slots are not the sweep's recorded shape (each run records it);
    ``env`` is more environment for every worker; ``warm`` keeps one process
    group per worker across trials (:mod:`wbsweep.warm`). ``progress`` shows the
    sweep's live progress (:mod:`wbsweep.progress`, on ``console``, a
    ``rich.console.Console``) and sends each worker's output to its own log
    file (``Backend.worker_log``) instead of this terminal.
    """
    limits = limits or DriveOptions("", max_consecutive_failures=DEFAULT_MAX_FAILURES)
    extra_env = limits.env()
    if limits.max_consecutive_failures is not None:
        # `wandb agent`'s own limit on failed runs at its start, for W&B workers.
        extra_env["WANDB_AGENT_MAX_INITIAL_FAILURES"] = str(limits.max_consecutive_failures)
    if sweep_file is not None:
        extra_env[SWEEP_FILE_ENV] = os.path.abspath(sweep_file)
    if overridden:
        extra_env[OVERRIDE_ENV] = "1"
    extra_env.update(env or {})
    # The backend is read by the display's thread and by the agent (``outlook``): in turn.
    lock = threading.Lock()

    def outlook() -> str:
        with lock:
            return backend.outlook(sweep_id)

    display = None
    if progress:
        from wbsweep.progress import LiveProgress

        watched = backend.watch(sweep_id)

        def read() -> tuple[Any, Any]:
            with lock:
                return watched()

        display = LiveProgress(
            read, [worker_name(slot) for slot in slots], console=console,
            poll=backend.progress_poll,
        )  # fmt: skip
    return Agent(
        lambda slot: worker_argv(backend, sweep_id, slot, limits.count, warm=warm),
        slots,
        stagger=backend.worker_stagger,
        extra_env=extra_env,
        keeper=backend.keeper_argv(sweep_id),
        # With --count, a worker that ran its share is done, whatever the sweep has left.
        outlook=outlook if limits.count is None else None,
        accelerate=accelerate,
        output=(lambda slot: backend.worker_log(sweep_id, worker_name(slot))) if progress else None,
        display=display,
    ).run()
