"""One trial across several nodes: node 0 takes each run, the others join it.

``wbsweep agent SWEEP --nodes N --node-rank R --main-host HOST`` on each node.
Node 0's agent serves a ``torch.distributed.TCPStore`` at ``HOST:PORT`` and
runs one worker as on a single node (the local worker, or ``wandb agent``:
only node 0 talks to the sweep's backend). Each trial's launcher on node 0
publishes the run (id, params, the sweep's trial arguments) as ``trial/K``
and waits until every node joined. The other nodes' agents run one follower
each (:mod:`wbsweep.follower`), which takes ``trial/K`` and runs the same
launcher with the same params. Every node's ``accelerate launch`` then gets
``--num_machines N --machine_rank R --main_process_ip HOST`` and the port
``PORT + 1``, so the ranks of all nodes form one process group.

A node whose part of a trial fails or stops ends it on every node: torch's
collectives fail on the others, a stop is agreed at a step by every rank
(:mod:`wbsweep.training`), and as a safety net each node's ranks watch the
store (:func:`watch_peers`) and leave when another node ended its part with
an error or went silent. The nodes then take the next run together.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wbsweep.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED, UsageError

__all__ = [
    "NodeGroup",
    "finish",
    "first_failure",
    "publish_trial",
    "record_end",
    "serve",
    "watch_peers",
]

NODES_ENV = "WBSWEEP_NODES"
NODE_RANK_ENV = "WBSWEEP_NODE_RANK"
MAIN_HOST_ENV = "WBSWEEP_MAIN_HOST"
MAIN_PORT_ENV = "WBSWEEP_MAIN_PORT"
#: The trial number (``K`` of ``trial/K``) a launcher passes to its ranks.
TRIAL_ENV = "WBSWEEP_NODE_TRIAL"
#: Seconds node 0 waits for every node to join a trial.
JOIN_TIMEOUT_ENV = "WBSWEEP_NODE_JOIN_TIMEOUT"
DEFAULT_PORT = 29400
#: A node's ranks count as gone after this long without a beat.
SILENT_AFTER = 60.0
#: Ends every node reaches together (a stop is agreed at a step): no reason to leave.
_TOGETHER = frozenset({"0", str(EXIT_INTERRUPTED), str(EXIT_TERMINATED)})
_PUBLISHED_ENV = ("WANDB_RUN_ID", "WANDB_SWEEP_ID", "WANDB_PROJECT", "WANDB_ENTITY")


@dataclass(frozen=True)
class NodeGroup:
    """This node's place among the nodes that run each trial together."""

    nodes: int
    rank: int
    host: str
    port: int = DEFAULT_PORT

    def __post_init__(self) -> None:
        if self.nodes < 2:
            raise UsageError(f"--nodes must be at least 2 for a group, got {self.nodes}")
        if not 0 <= self.rank < self.nodes:
            raise UsageError(f"--node-rank must be 0 to {self.nodes - 1}, got {self.rank}")
        if not self.host:
            raise UsageError("--main-host is needed with --nodes (node 0's address)")
        if not 0 < self.port < 65535:
            raise UsageError(f"--main-port must be a TCP port, got {self.port}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NodeGroup | None:
        """The group a worker's environment names, or ``None`` on a single node."""
        env = os.environ if environ is None else environ
        if int(env.get(NODES_ENV, "1") or 1) < 2:
            return None
        return cls(
            int(env[NODES_ENV]),
            int(env.get(NODE_RANK_ENV, "0")),
            env.get(MAIN_HOST_ENV, ""),
            int(env.get(MAIN_PORT_ENV, str(DEFAULT_PORT))),
        )

    def env(self) -> dict[str, str]:
        return {
            NODES_ENV: str(self.nodes),
            NODE_RANK_ENV: str(self.rank),
            MAIN_HOST_ENV: self.host,
            MAIN_PORT_ENV: str(self.port),
        }

    def store(self, *, serve: bool = False, timeout: float = 300.0) -> Any:
        """The group's TCPStore: served here on node 0's agent, else a client of it."""
        from torch.distributed import TCPStore

        return TCPStore(
            self.host,
            self.port,
            is_master=serve,
            timeout=datetime.timedelta(seconds=timeout),
            wait_for_workers=False,
        )

    def machine_settings(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` (one node's accelerate config) for its part in the group's trial."""
        per_node = int(config.get("num_processes", 1))
        out = dict(config)
        out.update(
            num_processes=per_node * self.nodes,
            num_machines=self.nodes,
            machine_rank=self.rank,
            main_process_ip=self.host,
            main_process_port=self.port + 1,
            rdzv_backend="static",
            same_network=False,
        )
        if out.get("distributed_type") == "NO":
            out["distributed_type"] = "MULTI_GPU"  # with use_cpu: gloo across the nodes
        return out


def get_key(store: Any, key: str) -> str | None:
    return store.get(key).decode() if store.check([key]) else None


def publish_trial(group: NodeGroup, program: str, rest: list[str], params_file: str) -> int:
    """Node 0's launcher: publish this run as the next trial; its number once all joined.

    Raises:
        UsageError: A node did not join within ``WBSWEEP_NODE_JOIN_TIMEOUT`` seconds.
    """
    store = group.store()
    number = int(store.add("trials", 1))
    trial = {
        "program": program,
        "rest": rest,
        "params": Path(params_file).read_text(encoding="utf-8"),
        "env": {k: os.environ[k] for k in _PUBLISHED_ENV if k in os.environ},
    }
    store.set(f"trial/{number}", json.dumps(trial))
    timeout = float(os.environ.get(JOIN_TIMEOUT_ENV, "600"))
    deadline = time.monotonic() + timeout
    for node in range(1, group.nodes):
        while not store.check([f"trial/{number}/joined/{node}"]):
            if time.monotonic() > deadline:
                store.set(f"trial/{number}/end/0", str(EXIT_FAILED))
                raise UsageError(
                    f"node {node} did not join trial {number} within {timeout:.0f} s: start "
                    f"wbsweep agent --nodes {group.nodes} --node-rank {node} --main-host "
                    f"{group.host} there"
                )
            time.sleep(0.2)
    return number


def watch_peers(group: NodeGroup, number: int, poll: float = 1.0) -> None:
    """In each rank: leave when another node ended trial ``number`` with an error or went silent.

    Local rank 0 of each node beats for its node. A rank leaves with exit 1
    after a short grace, so that an error of torch's own is said first; its
    error line names the first failing node's own error when that node said
    one (:func:`record_end`, read by :func:`first_failure`).
    """
    store = group.store()
    beats = os.environ.get("LOCAL_RANK", "0") in ("", "0")

    def watch() -> None:
        try:
            _watch()
        except RuntimeError:
            return  # the store is gone: node 0's agent ended; torch's own errors follow

    def _watch() -> None:
        while True:
            now = time.time()
            if beats:
                store.set(f"trial/{number}/alive/{group.rank}", str(now))
            for node in range(group.nodes):
                if node == group.rank:
                    continue
                end = get_key(store, f"trial/{number}/end/{node}")
                beat = get_key(store, f"trial/{number}/alive/{node}")
                silent = beat is not None and now - float(beat) > SILENT_AFTER
                if (end is not None and end not in _TOGETHER) or silent:
                    why = f"ended its part (exit {end})" if end else "went silent"
                    time.sleep(5.0)
                    said = first_failure(group, number, wait=0, store=store)
                    cause = said or f"node {node} {why}"
                    print(
                        f"wbsweep.trial: error: {cause}: trial {number} ends here too",
                        file=sys.stderr,
                        flush=True,
                    )
                    os._exit(EXIT_FAILED)
            time.sleep(poll)

    threading.Thread(target=watch, name="wbsweep-watch-nodes", daemon=True).start()


def record_end(group: NodeGroup, number: int, code: int, reason: str | None = None) -> bool:
    """This node's part of trial ``number`` ended with ``code``; whether it failed first.

    The first node to fail also leaves its ``reason``: the other nodes' ranks
    report it (:func:`first_failure`), not the lost connection they saw.
    """
    store = group.store()
    first = False
    if str(code) not in _TOGETHER and int(store.add(f"trial/{number}/failures", 1)) == 1:
        store.set(f"trial/{number}/first", json.dumps([group.rank, reason or f"exit {code}"]))
        first = True
    store.set(f"trial/{number}/end/{group.rank}", str(code))
    return first


def first_failure(
    group: NodeGroup, number: int, wait: float = 5.0, store: Any = None
) -> str | None:
    """``node N: why`` for the node that failed trial ``number`` first, waiting up to ``wait`` s.

    ``store`` is the group's store when the caller has it open already.
    """
    deadline = time.monotonic() + wait
    try:
        if store is None:
            store = group.store(timeout=wait)
        while (first := get_key(store, f"trial/{number}/first")) is None:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)
    except RuntimeError:
        return None
    node, reason = json.loads(first)
    return None if node == group.rank else f"node {node}: {reason}"


def serve(group: NodeGroup, command: list[str]) -> Any:
    """Node 0's agent: serve the group's store and tell the other nodes the sweep's command."""
    try:
        store = group.store(serve=True)
    except RuntimeError as exc:  # torch's DistNetworkError: the port is taken
        raise UsageError(
            f"cannot serve the nodes at port {group.port} here ({str(exc).split(',')[-1].strip()}):"
            " give node 0 and the others another --main-port"
        ) from None
    store.set("sweep", json.dumps(command))
    return store


def finish(group: NodeGroup, store: Any, code: int, wait: float = 30.0) -> None:
    """Node 0's agent is done (``code``): let the other nodes' agents end too."""
    store.set("done", str(code))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if store.check([f"left/{node}" for node in range(1, group.nodes)]):
            return
        time.sleep(0.2)
