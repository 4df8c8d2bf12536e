"""The local backend's worker: what ``wandb agent`` is to a W&B sweep.

A worker claims the sweep's next run from the store, writes the run's params
file, runs the sweep's ``command`` as its own process group, records how it
ended, and repeats until the sweep has nothing left for it. One failed trial
never ends the worker.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from wbsweep import procs
from wbsweep.backends import base
from wbsweep.backends.local import LocalBackend
from wbsweep.command import expand_command

# Seconds between SIGTERM and SIGKILL when a trial is stopped, as `wandb agent`.
KILL_DELAY_ENV = "WBSWEEP_KILL_DELAY"
DEFAULT_KILL_DELAY = 30.0
_PAUSED_POLL = 2.0
_CANCEL_POLL = 5.0


@dataclass(frozen=True)
class TrialOutcome:
    run_id: str
    state: str
    exit_code: int | None
    seconds: float


def trial_env(
    backend: LocalBackend, sweep_id: str, run_id: str, base_env: dict[str, str]
) -> dict[str, str]:
    """The environment one trial runs in: the worker's, plus the run's identity."""
    env = dict(base_env)
    env.update(
        WBSWEEP_STORE=str(backend.path),
        WBSWEEP_SWEEP_ID=sweep_id,
        WANDB_SWEEP_ID=sweep_id,
        WANDB_RUN_ID=run_id,
    )
    # Offline, so `wandb sync` can upload the runs later; an explicit choice wins.
    env.setdefault("WANDB_MODE", "offline")
    return env


class Worker:
    """Runs trials of one local sweep, one at a time, until none is left."""

    def __init__(
        self,
        backend: LocalBackend,
        sweep_id: str,
        *,
        name: str | None = None,
        count: int | None = None,
        kill_delay: float | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.backend = backend
        self.sweep_id = sweep_id
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.count = count
        self.kill_delay = (
            kill_delay
            if kill_delay is not None
            else float(os.environ.get(KILL_DELAY_ENV, DEFAULT_KILL_DELAY))
        )
        self.log = log or _print
        self.run_dir = backend.path.parent / f"sweep-{sweep_id}"
        self._stopping = False
        self._proc: subprocess.Popen[bytes] | None = None

    def run(self) -> list[TrialOutcome]:
        """Claim and run trials until none is left for this worker or it is told to stop."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        outcomes: list[TrialOutcome] = []
        try:
            while not self._stopping and (self.count is None or len(outcomes) < self.count):
                run = self.backend.claim_next(self.sweep_id, self.name)
                if run is None:
                    if self.backend.sweep(self.sweep_id).state == base.SWEEP_PAUSED:
                        time.sleep(_PAUSED_POLL)
                        continue
                    break
                outcomes.append(self.run_trial(run))
            self.backend.maybe_finish_sweep(self.sweep_id)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return outcomes

    def run_trial(self, run: base.RunRecord) -> TrialOutcome:
        sweep = self.backend.sweep(self.sweep_id)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        params_file = self.run_dir / f"config-{run.id}.json"
        params_file.write_text(json.dumps(run.params))
        env = trial_env(self.backend, self.sweep_id, run.id, dict(os.environ))
        argv = expand_command(
            list(sweep.config.get("command") or _default_command()),
            run.params,
            program=sweep.config.get("program"),
            args_json_file=str(params_file),
            env=env,
        )
        log_path = self.run_dir / f"run-{run.id}.log"
        shown = ", ".join(f"{k}={v}" for k, v in run.params.items())
        self.log(f"[{self.name}] run {run.id} started: {shown}")
        started = time.monotonic()
        with log_path.open("wb") as out:
            try:
                self._proc = procs.start_group(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
            except OSError as exc:
                out.write(f"cannot start {argv[0]!r}: {exc}\n".encode())
                exit_code: int | None = 127
            else:
                exit_code = self._wait()
            finally:
                self._proc = None
        state = self.backend.finish_run(run.id, exit_code=exit_code, stopped=self._stopping)
        seconds = time.monotonic() - started
        objective = self.backend.run(run.id).objective
        detail = f"objective={objective:.6g}" if objective is not None else f"exit {exit_code}"
        self.log(f"[{self.name}] run {run.id} {state}: {detail} ({seconds:.0f} s)")
        if state in (base.FAILED, base.CRASHED):
            self.log(_tail(log_path, f"[{self.name}]   "))
        return TrialOutcome(run.id, state, exit_code, seconds)

    def _wait(self) -> int | None:
        assert self._proc is not None
        proc = self._proc
        termed_at: float | None = None
        checked = time.monotonic()
        while True:
            try:
                return proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() - checked > _CANCEL_POLL:
                checked = time.monotonic()
                if self.backend.sweep(self.sweep_id).state == base.SWEEP_CANCELED:
                    self._stopping = True
            if self._stopping and termed_at is None:
                termed_at = time.monotonic()
                procs.signal_group(proc.pid, signal.SIGTERM)
            if termed_at is not None and time.monotonic() - termed_at > self.kill_delay:
                procs.signal_group(proc.pid, signal.SIGKILL)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True


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
    """``python -m wbsweep.worker STORE SWEEP_ID [NAME]``: one worker process."""
    args = sys.argv[1:] if argv is None else argv
    store, sweep_id = args[0], args[1]
    name = args[2] if len(args) > 2 else None
    Worker(LocalBackend(store), sweep_id, name=name).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
