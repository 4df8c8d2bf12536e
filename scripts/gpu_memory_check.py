"""GPU check: a local sweep on CUDA, and GPU memory back to baseline after every trial.

Runs ``sweeps/tiny.py`` (``--trials``, default 4) on the local backend with 2
workers of one GPU each (``--gpus-per-trial 1 --workers 2``: on a one-GPU
machine both share it), samples ``nvidia-smi`` every half second while the agent runs, and
after each trial ends checks that every GPU's used memory is back within
``--tolerance-mib`` of what it was before the sweep. Prints the figures and
exits non-zero when memory stays up or a trial did not finish.

    python scripts/gpu_memory_check.py [--trials 4] [--tolerance-mib 64]

Needs ``nvidia-smi`` and a CUDA build of torch; says so and exits 2 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def gpu_memory() -> dict[str, int]:
    """Used MiB per GPU index, as nvidia-smi reports it."""
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return {
        line.split(",")[0].strip(): int(line.split(",")[1]) for line in out.splitlines() if line
    }


def trial_memory() -> dict[str, int]:
    """GPU MiB held per run id, from nvidia-smi's compute processes and their environment."""
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    held: dict[str, int] = {}
    for line in out.splitlines():
        pid, _, used = (part.strip() for part in line.partition(","))
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue  # not in this PID namespace: only the totals can tell
        for item in environ:
            if item.startswith(b"WANDB_RUN_ID="):
                run_id = item.split(b"=", 1)[1].decode()
                held[run_id] = held.get(run_id, 0) + int(used or 0)
    return held


def wbsweep(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [str(BIN / "wbsweep"), *args], capture_output=True, text=True, env=env, check=True
    )
    return result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--tolerance-mib", type=int, default=64)
    parser.add_argument("--settle-seconds", type=float, default=20.0)
    options = parser.parse_args()
    if shutil.which("nvidia-smi") is None:
        print("gpu_memory_check: no nvidia-smi here; run it on a GPU machine")
        return 2
    work = Path(tempfile.mkdtemp(prefix="wbsweep-gpu-"))
    env = {
        **os.environ, "WBSWEEP_STORE": str(work / "store.db"), "WANDB_MODE": "offline",
        "WANDB_DIR": str(work), "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }  # fmt: skip
    baseline = gpu_memory()
    print(f"baseline used MiB per GPU: {baseline}")
    created = wbsweep(
        "create", str(REPO / "sweeps" / "tiny.py"), "--n-trials", str(options.trials),
        "--json", env=env,
    )  # fmt: skip
    sweep_id = json.loads(created)["sweep_id"]
    agent = subprocess.Popen(
        [str(BIN / "wbsweep"), "agent", sweep_id, "--gpus-per-trial", "1", "--workers", "2"],
        env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    samples: list[tuple[float, dict[str, int]]] = []
    held: list[tuple[float, dict[str, int]]] = []
    started = time.monotonic()
    while agent.poll() is None:
        samples.append((time.time(), gpu_memory()))
        held.append((time.time(), trial_memory()))
        time.sleep(0.5)
    output = agent.stdout.read() if agent.stdout else ""
    print(output.strip())
    elapsed = time.monotonic() - started
    for _ in range(int(options.settle_seconds * 2)):
        samples.append((time.time(), gpu_memory()))
        time.sleep(0.5)
    runs = json.loads(wbsweep("status", sweep_id, "--json", env=env))["runs"]
    gpus = sorted(baseline, key=int)
    peak = {g: max(m[g] for _, m in samples) for g in gpus}
    print(f"trials: {[r['state'] for r in runs]}; agent {elapsed:.0f} s; exit {agent.returncode}")
    print(f"peak used MiB per GPU: {peak}")
    leaks = []
    for run in runs:
        mine = [(t, h[run["id"]]) for t, h in held if run["id"] in h]
        trial_peak = max((mib for _, mib in mine), default=None)
        outlived = max((t for t, _ in mine), default=None)
        late = None if outlived is None else outlived - run["finished_at"]
        print(
            f"run {run['id']} ({run['worker']}): peak {trial_peak} MiB on the GPU; "
            f"its GPU memory last seen {late if late is None else round(late, 1)} s "
            "after the trial ended (<= 0 is clean)"
        )
        if late is not None and late > 2.0:
            leaks.append(run["id"])
    final = samples[-1][1]
    above = {g: final[g] - baseline[g] for g in gpus}
    print(f"after the sweep, MiB above baseline per GPU: {above}")
    if any(v > options.tolerance_mib for v in above.values()):
        leaks.append("sweep")
    ok = (
        agent.returncode == 0
        and [r["state"] for r in runs] == ["finished"] * options.trials
        and not leaks
    )
    print("gpu_memory_check: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
