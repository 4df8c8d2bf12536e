"""The one place that starts and stops process groups.

Every child wbsweep starts (a worker, a trial launcher) gets its own process
group, so one signal reaches it and everything it started, and asks the kernel
to SIGTERM it when its parent dies, so a SIGKILLed agent or worker leaves
nothing running. Trial ranks do the same for their launcher (``trial.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import IO, Any

_PR_SET_PDEATHSIG = 1


class Terminated(BaseException):
    """SIGTERM arrived: raised by :func:`raise_on_sigterm`'s handler in the main thread.

    A ``BaseException``, so a user's ``except Exception`` cannot swallow it.
    """


#: A trial's error line when SIGTERM ended it (the trial saved a checkpoint first).
TERMINATED_REASON = "terminated by SIGTERM"
#: A trial's error line when Ctrl-C (SIGINT, which a launcher passes on) ended it.
INTERRUPTED_REASON = "interrupted by Ctrl-C"


class Preemption:
    """What a SIGTERM during training asks: save a checkpoint at the next step, then leave.

    A scheduler (SLURM, Kubernetes) sends SIGTERM and waits a grace period
    before SIGKILL. Training notes the request (``requested``) and a Trainer
    callback ends it at the next step with a checkpoint; outside training a
    SIGTERM raises :class:`Terminated` at once.
    """

    def __init__(self) -> None:
        self.in_training = False
        self.requested = False
        #: Whether the agent that started this process has died (set once, by its watch).
        self.agent_lost: Callable[[], bool] = lambda: False

    def reset(self) -> None:
        self.in_training = False
        self.requested = False


#: This process's preemption state (a process gets one SIGTERM handler).
PREEMPTION = Preemption()

#: A file ``wbsweep agent`` creates when the scheduler SIGTERMs it, before it passes the
#: signal on: a trial's SIGTERM is then a preemption (W&B requeues the run), not a stop.
PREEMPT_MARK_ENV = "WBSWEEP_PREEMPT_MARK"


def node_preempting(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this node's ``wbsweep agent`` was told to go away (see :data:`PREEMPT_MARK_ENV`).

    A ``wandb agent`` stops a run (hyperband, the stop button) with the same
    SIGTERM a scheduler sends; only the agent that got the scheduler's signal knows.
    """
    mark = (os.environ if environ is None else environ).get(PREEMPT_MARK_ENV)
    return mark is not None and os.path.exists(mark)


#: Seconds after a first SIGTERM in which another counts as the same notice: the
#: node's agent signals the whole group and ``torchrun`` forwards it twice more.
ECHO_WINDOW = 5.0


def raise_on_sigterm() -> Any:
    """From now on SIGTERM ends this process's trial; a later SIGTERM kills at once.

    During training the first SIGTERM only sets :data:`PREEMPTION`'s request
    (the trial checkpoints, then raises :class:`Terminated` itself); at any
    other time it raises :class:`Terminated` here. Returns the handler it replaced.
    """

    first: list[float] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if PREEMPTION.in_training and not PREEMPTION.requested:
            PREEMPTION.requested = True
            first.append(time.monotonic())
            return
        if first and time.monotonic() - first[0] < ECHO_WINDOW:
            return  # the same notice again (a launcher forwards it twice): keep saving
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated

    return signal.signal(signal.SIGTERM, handler)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent exits (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def start_group(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
    cwd: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (a list, never a shell string) as the leader of a new session."""
    return subprocess.Popen(
        list(argv),
        env=dict(env),
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - runs before exec, sets one flag
    )


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; ``signal N`` for a number Python does not name.

    >>> signal_name(9), signal_name(200)
    ('SIGKILL', 'signal 200')
    """
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def signal_pid(pid: int, sig: int) -> None:
    """Send ``sig`` to one process; a process already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to a whole process group; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stat(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name: state, ppid, pgrp, session, ..."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def parent_of(pid: int) -> int | None:
    """``pid``'s parent; ``None`` when it is gone."""
    fields = _stat(pid)
    try:
        return int(fields[1]) if fields is not None else None
    except (IndexError, ValueError):
        return None


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        fields = _stat(int(entry)) if entry.isdigit() else None
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, parents before children (Linux ``/proc``)."""
    children, found = _children(), []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def other_groups(pid: int) -> list[int]:
    """The first process of each process group below ``pid`` other than ``pid``'s own.

    ``wandb agent`` starts each run's command in a group of its own, out of
    reach of a signal to the agent's group; its caller signals these instead.
    Only their leader: a trial's launcher passes a signal on to its ranks, and
    the processes beside a rank (its ``wandb-core``) must outlive the rank. The
    W&B SDK's service (``wandb-core``, in a session of its own) is never one of
    them: whoever started it still sends its runs' last data through it, and it
    leaves by itself when that process has gone.
    """
    own = _stat(pid)
    if own is None:
        return []
    children, found = _children(), []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        fields = _stat(child)
        if fields is None:
            continue
        if fields[2] != own[2]:
            if not is_wandb_service(child):
                found.append(child)
        else:
            todo.extend(children.get(child, []))
    return found


def is_wandb_service(pid: int) -> bool:
    """Whether ``pid`` runs the W&B SDK's service, ``wandb-core`` (Linux ``/proc``)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            program = handle.read().split(b"\0", 1)[0]
    except OSError:
        return False
    return os.path.basename(program).startswith(b"wandb-core")


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def stop_group(proc: subprocess.Popen[bytes], *, grace: float) -> int | None:
    """SIGTERM the group, SIGKILL it after ``grace`` seconds; return the exit code."""
    signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    signal_group(proc.pid, signal.SIGKILL)
    return proc.wait()
