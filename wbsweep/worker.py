"""The CLI worker: what ``wandb agent`` is to a W&B sweep, for a sweep wbsweep hands out.

``python -m wbsweep.worker STORE SWEEP_ID [NAME]`` (what ``wbsweep agent``
starts per slot) runs the :class:`~wbsweep.runloop.RunLoop` with a runner that
starts each trial as the sweep's ``command``, in its own process group: it
writes the run's params file, expands the command's macros as ``wandb agent``
does, logs the trial's output beside the store, and stops the group on SIGTERM,
Ctrl-C or a canceled sweep. One failed trial never ends the worker.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from wbsweep import procs
from wbsweep.backends.base import (
    Backend,
    DriveOptions,
    RunEnd,
    RunQueue,
    RunRecord,
    RunState,
    SweepState,
)
from wbsweep.command import expand_command
from wbsweep.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_GAVE_UP,
    EXIT_OK,
    UsageError,
    WbsweepError,
)
from wbsweep.runloop import RunLoop, TrialOutcome
from wbsweep.warm import WarmGroup, group_command

__all__ = ["Worker", "main", "trial_env"]

# Seconds between SIGTERM and SIGKILL when a trial is stopped, as `wandb agent`.
KILL_DELAY_ENV = "WBSWEEP_KILL_DELAY"
DEFAULT_KILL_DELAY = 30.0
# Seconds between two looks at the store while a trial runs: was the sweep canceled?
_CANCEL_POLL = 5.0
_EXIT_CANNOT_START = 127  # what a shell reports for a command it cannot run

_TRIAL_ERROR = "wbsweep.trial: error:"


def trial_env(
    queue: RunQueue, sweep_id: str, run_id: str, base_env: dict[str, str]
) -> dict[str, str]:
    """The environment one trial runs in: the worker's, plus the run's identity."""
    env = dict(base_env)
    env.update(queue.trial_env(sweep_id, run_id))
    # Offline, so `wandb sync` can upload the runs later; an explicit choice wins.
    env.setdefault("WANDB_MODE", "offline")
    return env


class Worker:
    """Runs trials of one sweep as process groups, one at a time, until none is left."""

    def __init__(
        self,
        backend: Backend,
        sweep_id: str,
        options: DriveOptions | None = None,
        *,
        warm: bool = False,
    ) -> None:
        """A worker for ``sweep_id``; ``options`` name it and set its limits and log.

        ``warm``: run every trial in one long-lived process group
        (:mod:`wbsweep.warm`) instead of a new ``accelerate launch`` per trial.
        """
        queue = backend.queue
        if queue is None:
            raise UsageError(f"the {backend.name} backend hands out runs through its own agent")
        self.queue: RunQueue = queue
        self.sweep_id = sweep_id
        self.config = backend.sweep(sweep_id).config
        options = options or DriveOptions("")
        self.name = options.worker or f"{socket.gethostname()}-{os.getpid()}"
        # `wandb agent`'s own variable works too, so one setting serves both backends.
        delay = os.environ.get(KILL_DELAY_ENV) or os.environ.get("WANDB_AGENT_KILL_DELAY")
        self.kill_delay = float(delay) if delay else DEFAULT_KILL_DELAY
        self.log = options.log or _print
        self.run_dir = Path(queue.work_dir(sweep_id))
        options = dataclasses.replace(options, worker=self.name, log=self.log)
        self.loop = RunLoop(queue, sweep_id, self.run_trial, options, on_end=self._ended)
        self._proc: subprocess.Popen[bytes] | None = None
        self.warm = warm
        self._group_tried = False
        self.group: WarmGroup | None = None
        self._warm_problem: str | None = None

    def run(self) -> list[TrialOutcome]:
        """Claim and run trials until none is left for this worker or it is told to stop."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            return self.loop.run()
        finally:
            if self.group is not None:
                self.group.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start_group(self) -> None:
        """Start the warm group, at the first run (a worker with nothing to run starts none)."""
        self._group_tried = True  # one try: a sweep whose trials cannot run warm runs cold
        scratch = self.run_dir / f"warm-{_safe(self.name)}"
        try:
            found = group_command(self.config, os.environ, os.getcwd(), scratch)
        except WbsweepError as exc:
            self._warm_problem = str(exc)  # every run fails for it, as each cold trial would
            return
        if found is None:
            self.log(f"[{self.name}] the sweep's command is not wbsweep's trial: running cold")
            return
        argv, env, ranks = found
        env.setdefault("WANDB_MODE", "offline")
        log = self.run_dir / f"warm-{_safe(self.name)}.log"
        self.group = WarmGroup(
            argv, env, ranks=ranks, log_path=log, kill_delay=self.kill_delay, say=self.log
        )
        self.group.start()
        self.log(f"[{self.name}] warm: one process group of {ranks} rank(s) for every trial")

    def run_trial(self, run: RunRecord) -> RunEnd:
        """Run one claimed run's command to its end: its exit code and, if it failed, why."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.warm and not self._group_tried:
            self._start_group()
        if self._warm_problem is not None:
            self._trial_log_line(run, f"wbsweep.launch: error: {self._warm_problem}")
            return RunEnd(EXIT_BAD_INPUT, self._warm_problem)
        if self.group is not None:
            return self._run_warm(run, self.group)
        params_file = self.run_dir / f"config-{run.id}.json"
        params_file.write_text(json.dumps(run.params))
        env = trial_env(self.queue, self.sweep_id, run.id, dict(os.environ))
        argv = expand_command(
            list(self.config.get("command") or _default_command()),
            run.params,
            program=self.config.get("program"),
            args_json_file=str(params_file),
            env=env,
        )
        self.log(f"[{self.name}] run {run.id} started: {_shown(run.params)}")
        log = self._log_path(run)
        with log.open("wb") as out:
            try:
                self._proc = procs.start_group(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
            except OSError as exc:
                out.write(f"cannot start {argv[0]!r}: {exc}\n".encode())
                return RunEnd(_EXIT_CANNOT_START, f"cannot start {argv[0]!r}: {exc}")
            try:
                exit_code, stopped = self._wait(run)
            finally:
                self._proc = None
        if exit_code == 0 or stopped:
            return RunEnd(exit_code, stopped=stopped)
        try:
            text = log.read_text(errors="replace")
        except OSError:
            text = ""
        killed = rank_killed_by(text)
        if killed is not None and exit_code is not None and exit_code > 0:
            # A rank killed by a signal (the OOM killer, a node problem) is a crash, not
            # the user's code failing: the run is crashed and its params run again.
            return RunEnd(-killed, f"a rank was killed by {procs.signal_name(killed)}")
        reason = failure_reason(text, exit_code)
        if reason == procs.TERMINATED_REASON:
            # SIGTERM reached the trial's ranks, not from this worker: another node of its
            # group was preempted, or a scheduler signaled the ranks. It resumes later.
            return RunEnd(exit_code, reason, preempted=True, elsewhere=True)
        return RunEnd(exit_code, reason)

    def _run_warm(self, run: RunRecord, group: WarmGroup) -> RunEnd:
        env = trial_env(self.queue, self.sweep_id, run.id, {})
        env.setdefault("WANDB_MODE", os.environ.get("WANDB_MODE") or "offline")
        self.log(f"[{self.name}] run {run.id} started: {_shown(run.params)}")
        log = self._log_path(run)
        log.write_bytes(b"")

        def should_stop() -> bool:
            if self.queue.sweep_state(self.sweep_id) == SweepState.CANCELED:
                self.loop.stop()
                return True
            if self.queue.should_stop(run.id):
                self.log(f"[{self.name}] run {run.id}: stopped early by the sweep's hyperband")
                return True
            return False

        starts = group.starts
        end = group.run(
            run.id,
            run.params,
            env=env,
            log=str(log),
            should_stop=should_stop,
            stopping=lambda: self.loop.stopping,
            # The next run's claim waits ready when this trial ends.
            finishing=self.loop.claim_ahead,
        )
        if group.starts > starts + 1 or (not group.alive and end.exit_code not in (0, 143)):
            self.log(f"[{self.name}] run {run.id}: the warm group is started again")
        return end

    def _trial_log_line(self, run: RunRecord, line: str) -> None:
        self._log_path(run).write_text(line + "\n")

    def _log_path(self, run: RunRecord) -> Path:
        return Path(self.queue.trial_log(self.sweep_id, run.id))

    def _ended(self, run: RunRecord, outcome: TrialOutcome) -> None:
        objective = self.queue.run(run.id).objective
        code = outcome.exit_code
        detail = f"objective={objective:.6g}" if objective is not None else f"exit {code}"
        self.log(f"[{self.name}] run {run.id} {outcome.state}: {detail} ({outcome.seconds:.0f} s)")
        if outcome.state in (RunState.FAILED, RunState.CRASHED):
            self.log(_tail(self._log_path(run), f"[{self.name}]   "))

    def _wait(self, run: RunRecord) -> tuple[int | None, bool]:
        """Wait for the trial; ``(exit code, whether early termination stopped it)``.

        Every ``_CANCEL_POLL`` seconds: a canceled sweep stops the worker, and
        the sweep's hyperband may stop this trial alone. A stopped trial gets
        SIGTERM, then SIGKILL after the kill delay.
        """
        assert self._proc is not None
        proc = self._proc
        termed_at: float | None = None
        stopped_early = False
        checked = time.monotonic()
        while True:
            try:
                return proc.wait(timeout=0.5), stopped_early
            except subprocess.TimeoutExpired:
                pass
            if termed_at is None and time.monotonic() - checked > _CANCEL_POLL:
                checked = time.monotonic()
                if self.queue.sweep_state(self.sweep_id) == SweepState.CANCELED:
                    self.loop.stop()
                elif self.queue.should_stop(run.id):
                    self.log(f"[{self.name}] run {run.id}: stopped early by the sweep's hyperband")
                    stopped_early = True
            if (self.loop.stopping or stopped_early) and termed_at is None:
                termed_at = time.monotonic()
                procs.signal_group(proc.pid, signal.SIGTERM)
            if termed_at is not None and time.monotonic() - termed_at > self.kill_delay:
                procs.signal_group(proc.pid, signal.SIGKILL)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # SIGTERM is what SLURM and Kubernetes send a node they take back: the
        # run is preempted and runs again. Ctrl-C (SIGINT) means stop.
        if signum == signal.SIGTERM:
            self.loop.preempt()
        else:
            self.loop.stop()


# How launchers report a rank that a signal killed: Python's subprocess (accelerate's
# one-process launcher) and torch elastic (several ranks).
_KILLED = (
    re.compile(r"died with <Signals\.(SIG[A-Z0-9]+): (\d+)>"),
    re.compile(r"exitcode\s*:\s*-(\d+)\b"),
)


def rank_killed_by(text: str) -> int | None:
    """The signal that killed one of the trial's ranks, as its launcher logged it; else None."""
    if _TRIAL_ERROR in text:
        return None  # the trial explained its own failure
    for pattern in _KILLED:
        match = pattern.search(text)
        if match:
            return int(match.group(match.lastindex or 1))
    return None


def failure_reason(text: str, exit_code: int | None) -> str:
    """Why a trial failed, in one line, from its log ``text``: its own error line, else how
    its process ended.

    The trial entry point ends a failure with ``wbsweep.trial: error: ...``
    (rank 0's, or the first rank's to fail); the last such line wins.
    """
    lines = [line.strip() for line in text.splitlines()]
    errors = [line.split(_TRIAL_ERROR, 1)[1].strip() for line in lines if _TRIAL_ERROR in line]
    if errors:
        return errors[-1]
    if exit_code is not None and exit_code < 0:
        return f"killed by {procs.signal_name(-exit_code)}"
    last = next((line for line in reversed(lines) if line), None)
    return last or f"exit code {exit_code}"


def _shown(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _print(line: str) -> None:
    print(line, flush=True)


def _tail(path: Path, prefix: str, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return f"{prefix}(no log at {path})"
    return "\n".join(prefix + line for line in text) + f"\n{prefix}full log: {path}"


def _default_command() -> list[str]:
    # A sweep config always carries a command when wbsweep created it; a
    # hand-registered one without falls back to what `wandb agent` does.
    return ["${env}", "${interpreter}", "${program}", "${args}"]


def main(argv: list[str] | None = None) -> int:
    """``python -m wbsweep.worker STORE SWEEP_ID [NAME] [--warm]``: one worker process.

    ``WBSWEEP_MAX_CONSECUTIVE_FAILURES`` and ``WBSWEEP_MAX_RETRIES`` (what
    ``wbsweep agent`` sets from its options, :meth:`DriveOptions.env`) tune it.
    Exits 0 when the sweep has nothing left for it, ``EXIT_GAVE_UP`` when too
    many trials failed in a row, 1 when every trial it ran failed.
    """
    from wbsweep.backends import open_backend

    args = sys.argv[1:] if argv is None else argv
    warm = "--warm" in args
    args = [arg for arg in args if arg != "--warm"]
    store, sweep_id = args[0], args[1]
    name = args[2] if len(args) > 2 else None
    try:
        options = DriveOptions.from_env(name or "", os.environ)
        worker = Worker(open_backend("local", store=store), sweep_id, options, warm=warm)
        worker.run()
    except WbsweepError as exc:
        print(f"wbsweep.worker: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    if worker.loop.gave_up:
        return EXIT_GAVE_UP
    ended = [outcome.state for outcome in worker.loop.outcomes]
    if ended and all(state in (RunState.FAILED, RunState.CRASHED) for state in ended):
        return EXIT_FAILED  # every trial it ran failed: the node's job did not succeed
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
