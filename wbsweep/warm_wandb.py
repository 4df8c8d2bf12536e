"""A warm worker on W&B: the SDK's agent takes the runs, one warm group trains them.

``python -m wbsweep.warm_wandb [--count N] ENTITY/PROJECT/ID`` (what ``wbsweep
agent --warm`` starts per slot on a W&B sweep) runs ``wandb.agent`` in this
process, as :meth:`WandbBackend.drive <wbsweep.backends.wandb.WandbBackend.drive>`
does for the plugin: the W&B server chooses each run and hands it to this
worker, which sends it to its :class:`~wbsweep.warm.WarmGroup`. Rank 0 of the
group joins the agent's run (``WANDB_RUN_ID``, ``WANDB_SWEEP_ID`` and the
sweep's param file, as ``wandb agent`` exports them to a cold trial) and logs
the objective there. A stop from W&B (hyperband, the stop button) reaches rank
0, and every rank ends training at the same step; a failed trial is a failed
run on W&B and the group goes on; SIGTERM (the node is preempted) makes the
trial checkpoint and rank 0 mark its run preempting, so W&B hands it out again.

Each trial's output is kept in ``$WANDB_DIR/wandb/wbsweep-warm/run-<id>.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from wbsweep import procs
from wbsweep.backends.base import ClaimedRun, DriveOptions
from wbsweep.errors import EXIT_TERMINATED, TrialError, WbsweepError
from wbsweep.warm import WarmGroup, group_command

__all__ = ["main"]

#: What ``wandb agent`` (and the SDK's in-process agent) exports for a run: a trial joins it.
_RUN_ENV = (
    "WANDB_RUN_ID", "WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH",
    "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR",
)  # fmt: skip


#: Seconds between the SDK agent's heartbeats in a warm worker (the SDK's own: 5).
AGENT_POLL = 1.0


#: Seconds a woken heartbeat waits for the SDK's agent to mark the ended run done.
SETTLE = 0.05


class _ModuleView:
    """A module as the SDK's agent module sees it: the names defined here replaced."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class WakeableClock(_ModuleView):
    """The ``time`` module as the SDK's agent module sees it, with sleeps that end early.

    The SDK's in-process agent heartbeats, then sleeps; it learns of its next
    run only at the heartbeat after the last run ended: half a poll of idle
    accelerator per trial on average. :meth:`wake_soon` (a trial has ended)
    ends the sleep going on, :data:`SETTLE` seconds later, by which time the
    agent has marked the run done, so that heartbeat asks for the next run.
    :meth:`halt` (the worker is told to leave) ends the asking: a sleep that
    ends after it never returns, so the agent takes no run this worker would
    leave ``pending`` on W&B. Only the agent's own threads sleep here, and the
    process leaves without waiting for them. Every other name is the real module's.

    >>> import time
    >>> clock = WakeableClock(time)
    >>> clock.wake_soon(); started = time.monotonic(); clock.sleep(5)
    >>> time.monotonic() - started < 1
    True
    """

    def __init__(self, real: Any) -> None:
        super().__init__(real)
        self._woken = threading.Event()
        self._halted = threading.Event()

    def sleep(self, seconds: float) -> None:
        if self._woken.wait(seconds):
            self._woken.clear()
            self._real.sleep(SETTLE)
        if self._halted.is_set():
            threading.Event().wait()  # the worker leaves: this thread asks for nothing more

    def wake_soon(self) -> None:
        self._woken.set()

    def halt(self) -> None:
        """No heartbeat after this one (safe to call from a signal handler)."""
        self._halted.set()


class KeptService(_ModuleView):
    """The ``wandb`` module as the SDK's agent module sees it, with no teardown per run.

    Before every run the SDK's in-process agent tears down the SDK's service
    and opens a new ``wandb.Api`` (a login check, one more round trip to W&B),
    so that a run the agent's function opens gets a fresh service. A warm
    worker opens no run in its own process (rank 0 of its group does), so here
    the agent keeps its service and its one Api: about 0.3 s less between
    trials. :meth:`close` is the one teardown, as the worker leaves.
    """

    def __init__(self, real: Any) -> None:
        super().__init__(real)
        self._api: Any = None
        self._lock = threading.Lock()

    def teardown(self, exit_code: int | None = None) -> None:
        """Nothing: the service this process keeps serves no run."""

    def Api(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 (the SDK's name)
        if args or kwargs:
            return self._real.Api(*args, **kwargs)
        with self._lock:
            if self._api is None:
                self._api = self._real.Api()
            return self._api

    def close(self) -> None:
        """The SDK's teardown; a service already gone (killed with its node) is fine."""
        with contextlib.suppress(Exception):
            self._real.teardown()


def _poll_sooner() -> WakeableClock | None:
    """The SDK's agent asks W&B for the next run every :data:`AGENT_POLL` seconds.

    A warm group is ready for the next run as soon as a trial ends, but the SDK's
    in-process agent only learns of its next run at its next heartbeat: 2.5 s
    of idle accelerator per trial on average at the SDK's 5 s, 0.5 s at 1 s.
    ``HEARTBEAT_SLEEP_SECONDS`` is the agent's class setting for this. Where
    the agent's module sleeps through ``time.sleep``, its clock becomes a
    :class:`WakeableClock` (returned), which a trial's end wakes.
    """
    import time

    from wandb.agents import pyagent

    agent = pyagent.Agent
    agent.HEARTBEAT_SLEEP_SECONDS = min(agent.HEARTBEAT_SLEEP_SECONDS, AGENT_POLL)  # type: ignore[assignment]
    if getattr(pyagent, "time", None) is not time:  # the SDK changed: poll as set above
        return None
    clock = WakeableClock(time)
    pyagent.time = clock  # type: ignore[assignment]
    return clock


def _keep_service() -> KeptService | None:
    """The SDK's agent in this process keeps its service across runs (:class:`KeptService`).

    ``None`` where the agent's module no longer reaches the SDK through its
    ``wandb`` name: the agent then tears down before each run, as it does.
    """
    import wandb
    from wandb.agents import pyagent

    if getattr(pyagent, "wandb", None) is not wandb:
        return None
    kept = KeptService(wandb)
    pyagent.wandb = kept  # type: ignore[assignment]
    return kept


class _Signals:
    """SIGTERM or Ctrl-C to this worker: its trial ends as a cold trial's would."""

    def __init__(self) -> None:
        self.stopping = False
        #: Whether a trial runs now (it ends itself; otherwise the worker leaves at once).
        self.in_trial = False
        #: The SDK agent's clock, halted at the signal: the agent takes no other run.
        self.clock: WakeableClock | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        if self.clock is not None:
            self.clock.halt()
        if not self.in_trial:
            raise procs.Terminated


def main(argv: list[str] | None = None) -> int:
    """Run trials of one W&B sweep in a warm group; the process exit code."""
    from wbsweep.backends import open_backend

    parser = argparse.ArgumentParser(prog="wbsweep.warm_wandb")
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("sweep")
    options = parser.parse_args(argv)
    name = f"{socket.gethostname()}-{os.getpid()}"
    signals = _Signals()
    group: WarmGroup | None = None
    kept: KeptService | None = None
    try:
        backend = open_backend("wandb")
        sweep = backend.sweep(options.sweep)
        limits = DriveOptions.from_env(name, os.environ, log=_print)
        if options.count is not None:
            limits = dataclasses.replace(limits, count=options.count)
        logs = Path(os.environ.get("WANDB_DIR") or os.getcwd()) / "wandb" / "wbsweep-warm"
        found = group_command(sweep.config, os.environ, os.getcwd(), logs / f"warm-{os.getpid()}")
        if found is None:
            raise TrialError(f"sweep {sweep.id}: its command is not wbsweep's trial; run it cold")
        command, env, ranks = found
        group = WarmGroup(command, env, ranks=ranks, log_path=logs / f"warm-{os.getpid()}.log")
        _print(f"[{name}] warm: one process group of {ranks} rank(s) for every trial")
        clock = signals.clock = _poll_sooner()
        kept = _keep_service()

        def trial(claimed: ClaimedRun) -> None:
            assert group is not None
            if group.starts == 0:  # at the first run: a worker with none starts no group
                group.start()
            run_env = {key: os.environ[key] for key in _RUN_ENV if key in os.environ}
            signals.in_trial = True
            try:
                end = group.run(
                    claimed.run_id,
                    claimed.params,
                    env=run_env,
                    log=str(logs / f"run-{claimed.run_id}.log"),
                    should_stop=claimed.should_stop or (lambda: False),
                    stopping=lambda: signals.stopping,
                )
            finally:
                signals.in_trial = False
                if clock is not None:  # the agent asks for the next run as this one ends
                    clock.wake_soon()
            if end.preempted or signals.stopping:
                # Preempted: rank 0 marked the run preempting, and W&B requeues it. Ctrl-C:
                # rank 0 ended the run. Either way this worker takes no other run.
                raise procs.Terminated
            if end.exit_code != 0 and not end.stopped:
                raise TrialError(end.reason or f"exit code {end.exit_code}")  # a failed run

        backend.drive(sweep.id, trial, limits)
    except procs.Terminated:
        return EXIT_TERMINATED
    except WbsweepError as exc:
        print(f"wbsweep.warm_wandb: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    finally:
        if group is not None:
            group.close()
        if kept is not None:
            kept.close()
    return EXIT_TERMINATED if signals.stopping else 0


def _print(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
