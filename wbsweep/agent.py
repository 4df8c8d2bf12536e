"""The node supervisor behind ``wbsweep agent``.

It decides how many workers this node runs and what each sees (a slice of the
GPUs, or a number of CPU processes per trial), writes each worker's
``accelerate`` config, starts the workers as process groups and stops them as a
whole on Ctrl-C or SIGTERM. Building argv and env (``plan_slots``,
``accelerate_config``, ``worker_env``) is separate from running them
(``Agent``), so the plan can be checked without starting anything.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from wbsweep import procs
from wbsweep.backends.base import DEFAULT_MAX_FAILURES, Backend, DriveOptions
from wbsweep.errors import (
    EXIT_FAILED,
    EXIT_GAVE_UP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    UsageError,
    WbsweepError,
)
from wbsweep.procs import PREEMPT_MARK_ENV

ACCELERATE_CONFIG_ENV = "WBSWEEP_ACCELERATE_CONFIG"
#: How many times the agent starts again a worker that a signal killed.
MAX_RESTARTS = 10


@dataclass(frozen=True)
class WorkerSlot:
    """What one worker's trials get: GPU ids (empty on CPU), ranks per trial, a port."""

    index: int
    gpus: tuple[str, ...]
    num_processes: int
    port: int

    @property
    def device(self) -> str:
        return f"GPUs {','.join(self.gpus)}" if self.gpus else "CPU"


def visible_gpus(env: Mapping[str, str], *, probe: bool = True) -> list[str]:
    """GPU ids this node may use: ``CUDA_VISIBLE_DEVICES``, else what ``nvidia-smi`` lists."""
    if "CUDA_VISIBLE_DEVICES" in env:
        return [g.strip() for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    if not probe or shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def plan_slots(
    gpus: Sequence[str],
    *,
    gpus_per_trial: int | None = None,
    workers: int | None = None,
    processes_per_trial: int | None = None,
    ports: Callable[[], int] | None = None,
) -> list[WorkerSlot]:
    """Split the node into worker slots.

    With GPUs: slices of ``gpus_per_trial`` (default 1), one rank per GPU, one
    worker per slice; ``workers`` fewer than that leaves slices idle, more
    shares the slices round-robin. On CPU: ``workers`` (default 1) slots of
    ``processes_per_trial`` (default 1) ranks each.

    >>> [s.gpus for s in plan_slots(["0", "1", "2", "3"], gpus_per_trial=2, ports=lambda: 1)]
    [('0', '1'), ('2', '3')]
    """
    next_port = ports or free_port
    for name, value in (
        ("--gpus-per-trial", gpus_per_trial),
        ("--workers", workers),
        ("--processes-per-trial", processes_per_trial),
    ):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
    if gpus:
        per = gpus_per_trial or 1
        if processes_per_trial is not None and processes_per_trial != per:
            raise UsageError(
                "--processes-per-trial is for CPU nodes; on GPUs each trial runs one "
                "rank per GPU (--gpus-per-trial)"
            )
        if per > len(gpus):
            raise UsageError(
                f"--gpus-per-trial {per} needs {per} GPUs, but this node sees {len(gpus)}"
            )
        slices = [tuple(gpus[i * per : (i + 1) * per]) for i in range(len(gpus) // per)]
        # More workers than slices share them round-robin (small models, big GPUs).
        count = workers if workers is not None else len(slices)
        return [WorkerSlot(i, slices[i % len(slices)], per, next_port()) for i in range(count)]
    if gpus_per_trial is not None:
        raise UsageError("--gpus-per-trial given, but this node sees no GPU")
    return [WorkerSlot(i, (), processes_per_trial or 1, next_port()) for i in range(workers or 1)]


def free_port() -> int:
    """A TCP port free right now on this host (each worker's rendezvous port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accelerate_config(slot: WorkerSlot) -> dict[str, Any]:
    """The ``accelerate launch --config_file`` contents for one worker's trials."""
    multi = slot.num_processes > 1
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        # On CPU, MULTI_GPU with use_cpu is what gives a real gloo group.
        "distributed_type": "MULTI_GPU" if multi else "NO",
        "num_processes": slot.num_processes,
        "num_machines": 1,
        "machine_rank": 0,
        "main_process_port": slot.port,
        "mixed_precision": "no",
        "use_cpu": not slot.gpus,
        "gpu_ids": "all",
        "rdzv_backend": "static",
        "same_network": True,
    }
    return config


def worker_env(slot: WorkerSlot, config_file: Path, base_env: Mapping[str, str]) -> dict[str, str]:
    """The environment one worker (and so each of its trials) runs in."""
    # Without this process's wandb-core address: each worker needs its own.
    env = {k: v for k, v in base_env.items() if k != "WANDB_SERVICE"}
    env[ACCELERATE_CONFIG_ENV] = str(config_file)
    # Pin the slice; on CPU hide GPUs so no trial grabs one by accident.
    env["CUDA_VISIBLE_DEVICES"] = ",".join(slot.gpus)
    if not slot.gpus:
        env["ACCELERATE_USE_CPU"] = "true"
    # `accelerate` and `python` in the sweep command resolve to this install.
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_accelerate_configs(slots: Sequence[WorkerSlot], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for slot in slots:
        path = directory / f"accelerate-worker{slot.index}.yaml"
        path.write_text(yaml.safe_dump(accelerate_config(slot), sort_keys=False))
        paths.append(path)
    return paths


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
    ) -> None:
        self.worker_argv = worker_argv
        #: The backend's keeper (reruns crashed runs) started beside the workers.
        self.keeper_argv = list(keeper) if keeper else None
        self._keeper: subprocess.Popen[bytes] | None = None
        #: Asked when every worker found nothing left (see ``Backend.outlook``).
        self.outlook = outlook
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
        try:
            configs = write_accelerate_configs(self.slots, workdir)
            envs: list[dict[str, str]] = []
            for slot, config in zip(self.slots, configs, strict=False):
                if self._signals:
                    break
                if slot.index and self.stagger:
                    time.sleep(self.stagger)
                env = {**worker_env(slot, config, os.environ), **self.extra_env}
                env[PREEMPT_MARK_ENV] = str(self._preempt_mark)
                self.log(
                    f"worker {slot.index}: {slot.device}, {slot.num_processes} "
                    f"process{'es' if slot.num_processes > 1 else ''} per trial"
                )
                envs.append(env)
                self._procs.append(procs.start_group(self.worker_argv(slot), env=env))
            if self.keeper_argv and envs and not self._signals:
                self._keeper = procs.start_group(self.keeper_argv, env=envs[0])
            codes = self._wait_all(envs)
        finally:
            self._stop_all()
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
                    slot = self.slots[index]
                    self._procs[index] = procs.start_group(self.worker_argv(slot), env=envs[index])
                    codes[index] = None
            if all(code is not None for code in codes):
                done = [int(code) for code in codes if code is not None]
                if not self._more_to_run(done):
                    return done
                self.log("runs were handed back to the sweep; starting the workers again")
                for index, slot in enumerate(self.slots):
                    self._procs[index] = procs.start_group(self.worker_argv(slot), env=envs[index])
            time.sleep(0.5)

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


def worker_argv(backend: Backend, sweep_id: str, slot: WorkerSlot) -> list[str]:
    """The argv of one worker on this node, as the backend starts its workers."""
    return backend.worker_argv(sweep_id, f"{socket.gethostname()}-w{slot.index}")


def run_agent(
    backend: Backend,
    sweep_id: str,
    slots: Sequence[WorkerSlot],
    *,
    limits: DriveOptions | None = None,
) -> int:
    """Run this node's workers for ``sweep_id`` until the sweep has nothing left.

    ``limits`` (failures in a row, retries) reach each worker through its environment.
    """
    limits = limits or DriveOptions("", max_consecutive_failures=DEFAULT_MAX_FAILURES)
    extra_env = limits.env()
    if limits.max_consecutive_failures is not None:
        # `wandb agent`'s own limit on failed runs at its start, for W&B workers.
        extra_env["WANDB_AGENT_MAX_INITIAL_FAILURES"] = str(limits.max_consecutive_failures)
    return Agent(
        lambda slot: worker_argv(backend, sweep_id, slot),
        slots,
        stagger=backend.worker_stagger,
        extra_env=extra_env,
        keeper=backend.keeper_argv(sweep_id),
        outlook=lambda: backend.outlook(sweep_id),
    ).run()
