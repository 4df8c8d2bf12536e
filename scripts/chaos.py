"""Chaos run: a local sweep completes while random parts of it are SIGKILLed.

``wbsweep agent --workers 4`` runs a grid of 40 short trials (``sweeps/tiny.py`` under
``accelerate launch``) on one store. Every 10 to 20 seconds a random worker process, trial
launcher or rank of the sweep gets SIGKILL, a bounded number of times. Then it checks what a
user would: exactly 40 finished runs, no grid point finished twice, no process of the sweep
left, ``PRAGMA integrity_check`` ok. It prints a table of the faults and the runs, and the wall
time against the same sweep with no faults (``--no-baseline`` skips that run).

    python scripts/chaos.py [--trials 40] [--faults 6] [--workers 4] [--no-baseline]

Not a CI test: it takes minutes. Exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TINY = REPO / "sweeps" / "tiny.py"


def processes_of(sweep_id: str) -> dict[int, str]:
    """Live processes whose command line or environment names the sweep: pid -> what it is."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(") ", 1)[-1]
        except OSError:
            continue
        if state.startswith("Z") or (sweep_id not in cmdline and sweep_id not in environ):
            continue
        if "wbsweep.worker" in cmdline:
            found[int(entry.name)] = "worker"
        elif "wbsweep.trial" in cmdline:
            found[int(entry.name)] = "rank"
        elif "accelerate" in cmdline and " launch " in cmdline:
            found[int(entry.name)] = "launcher"
        elif "wbsweep agent" in cmdline or "/wbsweep agent" in cmdline:
            found[int(entry.name)] = "agent"
    return found


def create(store: Path, trials: int) -> str:
    from wbsweep.backends.local import LocalBackend
    from wbsweep.prepare import SweepOptions, build_config

    rates = [round(1e-4 * (1.2**k), 8) for k in range(trials)]
    config = build_config(
        {"learning_rate": {"values": rates}},
        sweep_file=str(TINY),
        options=SweepOptions(method="grid", direction="minimize"),
    )
    return LocalBackend(store).create(config, sweep_file=str(TINY))


def run_sweep(
    work: Path, trials: int, workers: int, faults: int, seed: int
) -> tuple[float, list[dict], str, Path]:
    store = work / "store.db"
    sweep_id = create(store, trials)
    env = {
        **os.environ,
        "WBSWEEP_STORE": str(store),
        "WBSWEEP_HEARTBEAT_TIMEOUT": "10",
        "WBSWEEP_KILL_DELAY": "5",
        "WANDB_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    argv = [str(BIN / "wbsweep"), "agent", sweep_id, "--workers", str(workers)]
    argv += ["--max-retries", str(faults + 1)]
    started = time.monotonic()
    log = (work / "agent.log").open("w")
    agent = subprocess.Popen(argv, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    injected: list[dict] = []
    rng = random.Random(seed)
    next_fault = time.monotonic() + rng.uniform(10, 20)
    while agent.poll() is None:
        time.sleep(0.5)
        if len(injected) >= faults or time.monotonic() < next_fault:
            continue
        targets = {pid: kind for pid, kind in processes_of(sweep_id).items() if kind != "agent"}
        if targets:
            pid = rng.choice(sorted(targets))
            try:
                os.kill(pid, signal.SIGKILL)
                at = round(time.monotonic() - started, 1)
                injected.append({"at_s": at, "killed": targets[pid], "pid": pid})
            except ProcessLookupError:
                pass
        next_fault = time.monotonic() + rng.uniform(10, 20)
    log.close()
    return time.monotonic() - started, injected, sweep_id, store


def check(store: Path, sweep_id: str, trials: int) -> dict[str, Any]:
    from wbsweep.backends.local import LocalBackend

    runs = LocalBackend(store).runs(sweep_id)
    finished = [r for r in runs if r.state == "finished"]
    points = [json.dumps(r.params, sort_keys=True) for r in finished]
    time.sleep(2)  # the kernel delivers parent-death signals asynchronously
    with sqlite3.connect(store) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    return {
        "runs": len(runs),
        "finished": len(finished),
        "crashed": sum(r.state == "crashed" for r in runs),
        "failed": sum(r.state == "failed" for r in runs),
        "reruns": sum(r.retry_of is not None for r in runs),
        "duplicate points": len(points) - len(set(points)),
        "left processes": len(processes_of(sweep_id)),
        "integrity": integrity,
        "ok": len(finished) == trials and len(set(points)) == trials and integrity == "ok",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--faults", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baseline", action="store_true")
    options = parser.parse_args()
    sys.path.insert(0, str(REPO))

    with tempfile.TemporaryDirectory(prefix="wbsweep-chaos-") as tmp:
        work = Path(tmp, "chaos")
        work.mkdir()
        wall, injected, sweep_id, store = run_sweep(
            work, options.trials, options.workers, options.faults, options.seed
        )
        result = check(store, sweep_id, options.trials)
        result["ok"] = result["ok"] and result["left processes"] == 0
        baseline = None
        if not options.no_baseline:
            quiet = Path(tmp, "baseline")
            quiet.mkdir()
            baseline, _, _, _ = run_sweep(quiet, options.trials, options.workers, 0, options.seed)

    print(f"{'at (s)':>7}  {'killed':<9} pid")
    for fault in injected:
        print(f"{fault['at_s']:>7}  {fault['killed']:<9} {fault['pid']}")
    print()
    for key, value in result.items():
        print(f"{key:<17} {value}")
    print(f"{'wall time':<17} {wall:.0f} s with {len(injected)} faults", end="")
    print(f", {baseline:.0f} s without" if baseline is not None else "")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
