"""Warm workers: one ``accelerate launch`` process group that lives across trials.

A cold trial pays for a new process group every time: processes, imports of
torch, Transformers, datasets and wandb, the process group's rendezvous, the
sweep file and its datasets. A warm worker starts the group once
(:mod:`wbsweep.warm_rank` on every rank) and sends it one run after another
over a local socket; every rank gets the same params, as every cold rank reads
the same params file. The worker keeps what it owns in cold mode: it claims,
beats the run's heartbeat, watches for early termination and cancel, records
the end. A :class:`WarmGroup` is the worker's handle on the group:

* it starts the group (in its own session, as every trial) and waits for each
  rank to say hello;
* :meth:`WarmGroup.run` hands one run to every rank and waits for each rank's
  end; a stop (hyperband, cancel) goes to rank 0, which ends training on every
  rank at the same step; a signal to the worker goes to the group as SIGTERM,
  as in cold mode (a checkpoint, then the group leaves);
* a group that is broken — a rank died, a rank failed while the others did not
  answer within :data:`BROKEN_GRACE` seconds (a collective they wait in) — is
  stopped as a whole, the run is recorded with the reason, and the next run
  starts a fresh group.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection, Listener, wait
from pathlib import Path
from typing import Any

from wbsweep import procs
from wbsweep.backends.base import RunEnd
from wbsweep.errors import EXIT_FAILED

__all__ = [
    "ADDRESS_ENV",
    "AUTHKEY_ENV",
    "BROKEN_GRACE",
    "TrialEnded",
    "WarmGroup",
]

#: Where the ranks of a warm group reach their worker (a Unix socket), and its key.
ADDRESS_ENV = "WBSWEEP_WARM_ADDRESS"
AUTHKEY_ENV = "WBSWEEP_WARM_AUTHKEY"
#: Set in a warm group's environment: each run records that it ran warm.
WARM_ENV = "WBSWEEP_WARM_GROUP"
#: Seconds the other ranks get to end a trial after one rank failed in it.
BROKEN_GRACE = 30.0
#: Seconds a group whose rank died gets to end by itself (its launcher stops the rest).
LOST_GRACE = 10.0
#: Seconds a new group gets for every rank to start and load the sweep file.
START_TIMEOUT = 600.0
#: Bytes a rank may hold between trials over what it held after the first, unremarked.
MEMORY_SLACK = 64 * 2**20
#: How often the worker asks whether the running trial should stop.
STOP_POLL = 1.0


@dataclass(frozen=True)
class TrialEnded:
    """How one rank's part of a trial ended, as it tells its worker."""

    exit_code: int
    reason: str | None = None
    stopped: bool = False
    preempted: bool = False

    def as_message(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_message(cls, body: Mapping[str, Any]) -> TrialEnded:
        return cls(
            int(body.get("exit_code", EXIT_FAILED)),
            body.get("reason"),
            bool(body.get("stopped")),
            bool(body.get("preempted")),
        )


class WarmGroup:
    """A worker's long-lived process group of ``ranks`` ranks, started again when broken."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        ranks: int,
        log_path: str | os.PathLike[str],
        kill_delay: float = 30.0,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.ranks = ranks
        self.log_path = Path(log_path)
        self.kill_delay = kill_delay
        self.say = say or (lambda line: None)
        #: How many times a group was started (the first start included).
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._conns: dict[int, Connection] = {}
        self._hello_error: str | None = None
        self._listener: Listener | None = None
        self._tmp: str | None = None
        self._accepting: threading.Thread | None = None
        #: Accelerator bytes each rank still held after its last trial, and after its first.
        self.allocated: dict[int, int] = {}
        self.allocated_baseline: dict[int, int] = {}

    # -- the group's life ------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the group (it loads in the background; :meth:`run` waits for it)."""
        self.close()
        self._tmp = tempfile.mkdtemp(prefix="wbsweep-warm-")
        authkey = secrets.token_bytes(16)
        address = os.path.join(self._tmp, "worker.sock")
        self._listener = Listener(address, family="AF_UNIX", authkey=authkey)
        env = {**self.env, ADDRESS_ENV: address, AUTHKEY_ENV: authkey.hex(), WARM_ENV: "1"}
        # Rank 0 starts a wandb-core of its own: this process's may be torn down any time.
        env.pop("WANDB_SERVICE", None)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self._proc = procs.start_group(self.argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1
        self._conns, self._hello_error = {}, None
        listener = self._listener
        self._accepting = threading.Thread(
            target=self._accept, args=(listener,), name="wbsweep-warm-accept", daemon=True
        )
        self._accepting.start()

    def _accept(self, listener: Listener) -> None:
        while len(self._conns) < self.ranks:
            try:
                conn = listener.accept()
                kind, body = conn.recv()
            except (OSError, EOFError):
                return  # closed: the group is being stopped
            except Exception:  # noqa: BLE001 - a stranger with the wrong key: ignore it
                continue
            if kind == "hello" and body.get("error"):
                self._hello_error = str(body["error"])
            self._conns[int(body.get("rank", len(self._conns)))] = conn

    def _ready(self, stopping: Callable[[], bool]) -> str | None:
        """Wait until every rank said hello; why it cannot run trials, or None."""
        if not self.alive:
            self.start()
        deadline = time.monotonic() + START_TIMEOUT
        while len(self._conns) < self.ranks or self._hello_error:
            if self._hello_error:
                return self._hello_error
            if not self.alive:
                return self._exit_reason("the warm worker's process group ended while starting")
            if stopping() or time.monotonic() > deadline:
                return "the warm worker's process group did not start in time"
            time.sleep(0.05)
        return None

    def close(self, grace: float = 40.0) -> None:
        """Tell the ranks to leave and stop the group; nothing of it outlives this call.

        The ranks get ``grace`` seconds to leave: rank 0 may still be sending its
        last W&B run (it waits up to 30 s for that, ``warm_rank._Uploads``).
        """
        for rank, conn in self._conns.items():
            try:
                # What the last trial left on the accelerator, if the rank still says.
                while grace and conn.poll(1.0):
                    kind, message = conn.recv()
                    if kind == "memory":
                        self._memory(rank, message.get("allocated"))
                        break
                conn.send(("exit", None))
            except (OSError, EOFError):
                pass
        if self._proc is not None:
            deadline = time.monotonic() + grace
            while self._proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            procs.stop_group(self._proc, grace=min(grace, 5.0))
        for conn in self._conns.values():
            conn.close()
        self._conns = {}
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._proc = None

    def _kill(self) -> None:
        if self._proc is not None:
            procs.stop_group(self._proc, grace=min(self.kill_delay, 5.0))
        self.close(grace=0)

    # -- one trial ---------------------------------------------------------------------

    def run(
        self,
        run_id: str,
        params: Mapping[str, Any],
        *,
        env: Mapping[str, str],
        log: str,
        should_stop: Callable[[], bool],
        stopping: Callable[[], bool],
        finishing: Callable[[], None] | None = None,
    ) -> RunEnd:
        """Run one trial on every rank of the group; how it ended.

        ``env`` is the trial's identity (run id, sweep, store), ``log`` its log
        file. ``should_stop`` is asked every :data:`STOP_POLL` seconds (the
        sweep's early termination, a cancel); ``stopping`` says the worker was
        told to stop (its trial gets SIGTERM, as a cold trial does);
        ``finishing`` is called when rank 0 starts the final evaluation.
        """
        problem = self._ready(stopping)
        if problem is not None:
            self._kill()
            return RunEnd(EXIT_FAILED, problem)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        body = {"run_id": run_id, "params": dict(params), "env": dict(env), "log": log}
        for conn in self._conns.values():
            conn.send(("trial", body))
        ends: dict[int, TrialEnded] = {}
        first_failure: tuple[float, TrialEnded] | None = None
        termed_at: float | None = None
        lost_at: float | None = None
        orphaned_at: float | None = None
        lost: set[int] = set()
        stop_sent = False
        polled = time.monotonic()
        while len(ends) < self.ranks:
            waiting = [c for r, c in self._conns.items() if r not in ends and r not in lost]
            for ready in wait(waiting, timeout=0.2):
                rank = next(r for r, c in self._conns.items() if c is ready)
                conn = self._conns[rank]
                try:
                    kind, message = conn.recv()
                except (EOFError, OSError):
                    # The rank died mid-trial: its launcher stops the others and says how.
                    lost.add(rank)
                    lost_at = lost_at or time.monotonic()
                    continue
                if kind == "memory":  # the previous trial's, freed after its end
                    self._memory(rank, message.get("allocated"))
                    continue
                if kind == "finishing":
                    if finishing is not None:
                        finishing()
                    continue
                if kind == "end":
                    ends[rank] = TrialEnded.from_message(message)
                    failed = ends[rank].exit_code != 0 and not ends[rank].preempted
                    if failed and first_failure is None:
                        first_failure = (time.monotonic(), ends[rank])
            if len(ends) == self.ranks:
                break
            now = time.monotonic()
            if stopping() and termed_at is None:
                termed_at = now
                # The group's id outlives its leader: this reaches ranks whose launcher
                # is gone already (the node's agent signals every process it started).
                procs.signal_group(self._proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
            # The launcher may leave before its ranks end (one rank: accelerate's launcher
            # does not wait for it on a signal). Its ranks get SIGTERM when it dies, save
            # their checkpoint and say so: a rank still connected is still ending its trial.
            ending = any(r not in ends and r not in lost for r in self._conns)
            if not self.alive and ending:
                orphaned_at = orphaned_at or now
                ending = now - orphaned_at <= self.kill_delay
            if not self.alive and not ending:
                end = self._lost(ends, first_failure, offset)
                self.close(grace=0)
                return end
            if lost_at is not None and now - lost_at > LOST_GRACE:
                self._kill()  # the launcher did not end the group itself
                return self._lost(ends, first_failure, offset)
            if first_failure is not None and now - first_failure[0] > BROKEN_GRACE:
                self.say(f"run {run_id}: a rank failed and the others did not end; restarting")
                self._kill()
                return RunEnd(first_failure[1].exit_code, first_failure[1].reason)
            if not stop_sent and now - polled >= STOP_POLL:
                polled = now
                if should_stop():
                    self._conns[0].send(("stop", None))
                    stop_sent, termed_at = True, termed_at or now
            if termed_at is not None and now - termed_at > self.kill_delay:
                self._kill()
                return RunEnd(None, "the trial did not stop within the kill delay", stopped=True)
        return self._combined(ends)

    def _memory(self, rank: int, allocated: int | None) -> None:
        """Note what a rank still holds on its accelerator between trials; say if it grows."""
        if allocated is None:
            return
        baseline = self.allocated_baseline.setdefault(rank, allocated)
        self.allocated[rank] = allocated
        with self.log_path.open("a", encoding="utf-8") as log:  # read by gpu_memory_check.py
            log.write(f"wbsweep.warm: rank {rank} allocated {allocated} bytes after its trial\n")
        if allocated - baseline > MEMORY_SLACK:
            self.say(
                f"rank {rank} still holds {allocated / 2**20:.0f} MiB of accelerator memory "
                f"between trials ({baseline / 2**20:.0f} MiB after the first)"
            )

    def _combined(self, ends: Mapping[int, TrialEnded]) -> RunEnd:
        if any(end.preempted for end in ends.values()):
            # SIGTERM ended the trial (a checkpoint is saved): the ranks leave, and the
            # run resumes later, here or elsewhere.
            self.close(grace=self.kill_delay)
            return RunEnd(143, procs.TERMINATED_REASON, preempted=True, elsewhere=True)
        failed = [end for _, end in sorted(ends.items()) if end.exit_code != 0]
        if failed:
            return RunEnd(failed[0].exit_code, failed[0].reason)
        return RunEnd(0, stopped=any(end.stopped for end in ends.values()))

    def _lost(
        self,
        ends: Mapping[int, TrialEnded],
        first_failure: tuple[float, TrialEnded] | None,
        offset: int,
    ) -> RunEnd:
        """How a trial ended whose group exited before every rank said so."""
        from wbsweep.worker import rank_killed_by

        # A rank killed by a signal (the OOM killer) is a crash, whatever the others
        # then said about the connection they lost: the run is crashed and runs again.
        killed = rank_killed_by(_read_from(self.log_path, offset))
        if killed is not None:
            return RunEnd(-killed, f"a rank was killed by {procs.signal_name(killed)}")
        if any(end.preempted for end in ends.values()):
            return RunEnd(143, procs.TERMINATED_REASON, preempted=True, elsewhere=True)
        if first_failure is not None:
            return RunEnd(first_failure[1].exit_code, first_failure[1].reason)
        code = self._proc.poll() if self._proc is not None else None
        return RunEnd(code, self._exit_reason(""))

    def _exit_reason(self, fallback: str) -> str:
        code = self._proc.poll() if self._proc is not None else None
        lines = [ln.strip() for ln in _read_from(self.log_path, 0).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()]
        detail = (errors or lines or [fallback or f"exit code {code}"])[-1]
        return f"the warm group ended (exit {code}): {detail}"


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def runs_warm(config: Mapping[str, Any]) -> bool:
    """Whether a sweep's trials can run warm: its ``command`` is wbsweep's trial.

    >>> runs_warm({"command": ["${env}", "python", "-m", "wbsweep.launch", "${program}"]})
    True
    >>> runs_warm({"command": ["python", "train.py", "${args}"]})
    False
    """
    return "wbsweep.launch" in [str(token) for token in config.get("command") or []]


def group_command(
    config: Mapping[str, Any], environ: Mapping[str, str], cwd: str, scratch: Path
) -> tuple[list[str], dict[str, str], int] | None:
    """A warm group's argv, environment and ranks for a sweep, on this node.

    What ``wbsweep.launch`` does for one cold trial, once: the sweep file where
    this node has it, this worker's accelerate config (or one in the sweep's
    recorded shape, written under ``scratch``), the recorded ``accelerate
    launch`` flags. ``None`` when the sweep's ``command`` is not wbsweep's
    trial (a hand-written command only runs cold).

    Raises:
        UsageError: The sweep file is not on this node, or the node cannot run
            the recorded shape.
    """
    import yaml

    from wbsweep.launch import launch_argv, resolve_sweep_file, this_node
    from wbsweep.shape import parse_shape

    if not runs_warm(config):
        return None
    command = [str(token) for token in config.get("command") or []]
    tokens = command[command.index("wbsweep.launch") + 1 :]
    program = str(config.get("program") or "") if tokens[:1] == ["${program}"] else tokens[0]
    shape, rest = parse_shape(tokens[1:])
    options = [token for token in rest if not token.startswith("${")]
    sweep_file = resolve_sweep_file(program, environ, cwd)
    config_file, accelerate, env_set = this_node(environ, shape)
    if accelerate is None:
        accelerate = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
    else:
        scratch.mkdir(parents=True, exist_ok=True)
        written = scratch / "accelerate.yaml"
        written.write_text(yaml.safe_dump(accelerate, sort_keys=False), encoding="utf-8")
        config_file = str(written)
    argv = launch_argv(
        config_file, sweep_file, options, shape.accelerate_args, module="wbsweep.warm_rank"
    )
    return argv, {**environ, **env_set}, int(accelerate.get("num_processes", 1) or 1)
