"""A node other than 0 of a multi-node trial: its agent and its one worker.

``wbsweep agent SWEEP --nodes N --node-rank R`` (R > 0) runs :func:`follow_node`:
it learns the sweep's trial shape from node 0, then runs one worker,
``python -m wbsweep.follower``, which joins each trial node 0 publishes
(:mod:`wbsweep.nodes`) by running the same launcher with the same params, until
node 0's agent is done.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wbsweep.errors import EXIT_FAILED, EXIT_TERMINATED
from wbsweep.nodes import TRIAL_ENV, NodeGroup, get_key

__all__ = ["follow", "follow_node"]


def follow_node(
    group: NodeGroup,
    *,
    gpus_per_trial: int | None,
    processes_per_trial: int | None,
    accelerate: Mapping[str, Any],
    env: Mapping[str, str],
    log: Any = print,
) -> int:
    """A node other than 0: one worker that joins each of node 0's trials, in the sweep's shape."""
    from wbsweep.agent import Agent
    from wbsweep.shape import OVERRIDE_ENV, sweep_shape
    from wbsweep.slots import shaped_slots, visible_gpus

    log(f"Node {group.rank} of {group.nodes}: waiting for node 0 at {group.host}:{group.port}")
    store = group.store(timeout=3600.0)
    while not store.check(["sweep"]):
        time.sleep(0.5)
    shape = sweep_shape(json.loads(store.get("sweep").decode()))
    slots, overridden = shaped_slots(
        shape,
        visible_gpus(os.environ),
        gpus_per_trial=gpus_per_trial,
        processes_per_trial=processes_per_trial,
        workers=1,
        what="the sweep",
    )
    accelerate = shape.accelerate_config(accelerate)
    extra = {**env, **group.env(), **({OVERRIDE_ENV: "1"} if overridden else {})}
    argv = [sys.executable, "-m", "wbsweep.follower"]
    return Agent(lambda slot: argv, slots, extra_env=extra, accelerate=accelerate).run()


def follow(group: NodeGroup, poll: float = 0.5) -> int:
    """A follower node's worker: join each trial node 0 publishes until node 0 is done."""
    try:
        return _follow(group, poll)
    except RuntimeError as exc:  # the store's errors: node 0's agent is gone
        print(
            f"wbsweep.follower: error: lost node 0 at {group.host}:{group.port}: {exc}", flush=True
        )
        return EXIT_FAILED


def _follow(group: NodeGroup, poll: float) -> int:
    # SIGTERM reaches this worker's whole process group: the trial's ranks save a
    # checkpoint at a step every node agrees on; this worker leaves once they are done.
    leaving = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: leaving.set())
    store = group.store(timeout=3600.0)
    number = int(store.add("trials", 0))
    if number == 0 or store.check([f"trial/{number}/end/0"]):
        number += 1  # the trial node 0 runs now, if any, is joined only when it is still open
    scratch = Path(tempfile.mkdtemp(prefix="wbsweep-node-"))
    while True:
        trial = get_key(store, f"trial/{number}")
        if trial is None:
            done = get_key(store, "done")
            if done is not None:
                store.set(f"left/{group.rank}", "1")
                return int(done)
            if leaving.is_set():
                return EXIT_TERMINATED
            time.sleep(poll)
            continue
        code = _run_part(group, number, json.loads(trial), scratch)
        if not store.check([f"trial/{number}/end/{group.rank}"]):
            # Its ranks said nothing (a launcher failed, or a signal killed them).
            store.set(f"trial/{number}/end/{group.rank}", str(code))
        if leaving.is_set():
            return EXIT_TERMINATED
        number += 1


def _run_part(group: NodeGroup, number: int, trial: dict[str, Any], scratch: Path) -> int:
    params = scratch / f"params-{number}.json"
    params.write_text(trial["params"], encoding="utf-8")
    env = {**os.environ, **trial["env"], TRIAL_ENV: str(number)}
    argv = [sys.executable, "-m", "wbsweep.launch", trial["program"], *trial["rest"], str(params)]
    print(f"node {group.rank}: joining trial {number} (run {env.get('WANDB_RUN_ID')})", flush=True)
    group.store().set(f"trial/{number}/joined/{group.rank}", "1")
    return subprocess.run(argv, env=env, check=False).returncode


def main() -> int:
    group = NodeGroup.from_env()
    if group is None or group.rank == 0:
        print(
            "wbsweep.follower: error: run by wbsweep agent --node-rank N (N > 0)", file=sys.stderr
        )
        return 2
    return follow(group)


if __name__ == "__main__":
    raise SystemExit(main())
