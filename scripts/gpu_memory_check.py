"""GPU check: a cold and a warm sweep on CUDA in bf16, 2 workers, memory back after every trial.

For each mode (``--modes cold,warm``) it runs ``scripts/bench/timed_sweep.py``
(the tiny BERT with a clock; each trial trains ``--trial-seconds``) on the
local backend with 2 workers of one GPU each (``--gpus-per-trial 1 --workers
2``; on a one-GPU machine both share it), bf16, and samples ``nvidia-smi``
every half second. It prints one table:

* per-trial overhead p50/p90: the end of a trial's final evaluation to the
  first step of the worker's next trial;
* GPU busy: the share of samples in which a GPU was computing (utilization > 0),
  and the mean utilization;
* memory: the GPU's used MiB before the sweep and after it, and per trial —
  cold: the MiB the trial's processes still held 2 s after it ended (must be 0);
  warm: the MiB the worker's group held after each trial above what it held after
  its first (must stay within ``--tolerance-mib``: the CUDA context stays, the
  trial's tensors do not), and the most bytes the allocator's counter
  (``torch.cuda.memory_allocated``) grew on a rank, from after its first trial
  to after a later one (must stay within ``--tolerance-mib`` too). Where
  ``nvidia-smi`` cannot name the processes (a container with its own PID
  namespace), *trial MiB* is ``n/a`` and only the totals and the allocator's
  counters are checked.

It exits non-zero when memory stays up, a trial did not finish, or the GPU
does not return to its baseline once the sweep is over.

    python scripts/gpu_memory_check.py [--trials 6] [--trial-seconds 10] [--modes cold,warm]

Needs ``nvidia-smi`` and a CUDA build of torch; says so and exits 2 otherwise.
``--cpu`` runs the same sweeps on CPU without the GPU columns, to check the
script itself on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SWEEP = REPO / "scripts" / "bench" / "timed_sweep.py"
_ALLOCATED = re.compile(r"wbsweep\.warm: rank (\d+) allocated (\d+) bytes")


def _smi(query: str) -> list[list[str]]:
    out = subprocess.run(
        ["nvidia-smi", f"--query-{query}", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return [[part.strip() for part in line.split(",")] for line in out.splitlines() if line]


def gpu_sample() -> dict[str, tuple[int, int]]:
    """Per GPU index: (used MiB, utilization %)."""
    rows = _smi("gpu=index,memory.used,utilization.gpu")
    return {row[0]: (int(row[1]), int(row[2])) for row in rows}


def process_memory() -> dict[str, int]:
    """GPU MiB per owner: a cold trial's run id, or a warm group's address."""
    held: dict[str, int] = {}
    for pid, used in _smi("compute-apps=pid,used_memory"):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue  # not in this PID namespace: only the totals can tell
        for item in environ:
            key, _, value = item.partition(b"=")
            if key in (b"WANDB_RUN_ID", b"WBSWEEP_WARM_ADDRESS"):
                owner = value.decode()
                held[owner] = held.get(owner, 0) + int(used or 0)
    return held


def _wbsweep(*args: str, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [str(BIN / "wbsweep"), *args], capture_output=True, text=True, env=env, cwd=cwd, check=True
    )
    return done.stdout


def run_mode(mode: str, options: argparse.Namespace) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix=f"wbsweep-gpu-{mode}-"))
    times = work / "times.jsonl"
    env = {
        **os.environ, "WBSWEEP_STORE": str(work / "store.db"), "WANDB_MODE": "offline",
        "WANDB_DIR": str(work), "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
        "WBSWEEP_BENCH_TIMES": str(times), "WBSWEEP_BENCH_SECONDS": str(options.trial_seconds),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }  # fmt: skip
    shape = (
        ["--processes-per-trial", "1"]
        if options.cpu
        else ["--gpus-per-trial", "1", "--mixed-precision", "bf16"]
    )
    created = _wbsweep("create", str(SWEEP), "--n-trials", str(options.trials), *shape,
                       "--json", env=env, cwd=work)  # fmt: skip
    sweep_id = json.loads(created)["sweep_id"]
    argv = [str(BIN / "wbsweep"), "agent", sweep_id, "--workers", "2", f"--{mode}"]
    before = {} if options.cpu else gpu_sample()
    samples: list[tuple[float, dict[str, tuple[int, int]], dict[str, int]]] = []
    started = time.time()
    agent = subprocess.Popen(argv, env=env, cwd=work, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
    while agent.poll() is None:
        if not options.cpu:
            samples.append((time.time(), gpu_sample(), process_memory()))
        time.sleep(0.5)
    wall = time.time() - started
    output = agent.stdout.read() if agent.stdout else ""
    time.sleep(0 if options.cpu else options.settle_seconds)
    after = {} if options.cpu else gpu_sample()
    runs = json.loads(_wbsweep("status", sweep_id, "--json", env=env, cwd=work))["runs"]
    result: dict[str, object] = {
        "mode": mode, "exit": agent.returncode, "wall": wall, "output": output,
        "finished": sum(r["state"] == "finished" for r in runs), "runs": len(runs),
    }  # fmt: skip
    result.update(_overhead(times, runs))
    if not options.cpu:
        result.update(_busy(samples))
        result.update(_memory(mode, runs, samples, before, after, options.tolerance_mib))
    result["allocated"] = _allocated(Path(env["WBSWEEP_STORE"]).parent / f"sweep-{sweep_id}")
    shutil.rmtree(work, ignore_errors=True)
    return result


def _overhead(times: Path, runs: list[dict]) -> dict[str, float]:
    """Per worker: a trial's last evaluation to the next trial's first step."""
    events = [json.loads(line) for line in times.read_text().splitlines() if line.strip()]
    by_run: dict[str, dict[str, float]] = {}
    for event in events:
        marks = by_run.setdefault(event["run"].rsplit("run-", 1)[-1], {})
        if event["event"] == "first_step":
            marks.setdefault("first_step", event["t"])
        elif event["event"] == "evaluate":
            marks["end"] = event["t"]
    gaps: list[float] = []
    workers: dict[str, list[dict[str, float]]] = {}
    for run in runs:
        if run["id"] in by_run and {"first_step", "end"} <= set(by_run[run["id"]]):
            workers.setdefault(run["worker"], []).append(by_run[run["id"]])
    for trials in workers.values():
        trials.sort(key=lambda t: t["first_step"])
        gaps += [b["first_step"] - a["end"] for a, b in zip(trials, trials[1:], strict=False)]
    if not gaps:
        return {}
    p90 = statistics.quantiles(gaps, n=10)[-1] if len(gaps) > 1 else gaps[0]
    return {"p50": statistics.median(gaps), "p90": p90}


def _busy(samples: list) -> dict[str, float]:
    utils = [max(u for _, u in gpus.values()) for _, gpus, _ in samples if gpus]
    if not utils:
        return {}
    return {"busy": sum(u > 0 for u in utils) / len(utils), "util": statistics.mean(utils)}


def _memory(
    mode: str, runs: list[dict], samples: list, before: dict, after: dict, tolerance: int
) -> dict[str, object]:
    """Whether every trial gave its GPU memory back (see the module docstring)."""
    base = sum(mib for mib, _ in before.values())
    end = sum(mib for mib, _ in after.values())
    out: dict[str, object] = {"before_mib": base, "after_mib": end}
    worst = 0
    if mode == "cold":
        for run in runs:  # nothing of a cold trial holds GPU memory 2 s after it ended
            late = [held.get(run["id"], 0) for t, _, held in samples
                    if run["finished_at"] and t > run["finished_at"] + 2.0]  # fmt: skip
            worst = max([worst, *late])
    else:
        groups: dict[str, list[int]] = {}
        for run in runs:  # a group's memory just after each of its trials ended
            if not run["finished_at"]:
                continue
            nxt = next(((t, held) for t, _, held in samples if t > run["finished_at"] + 0.5), None)
            for owner, mib in (nxt[1] if nxt else {}).items():
                if owner.endswith(".sock"):
                    groups.setdefault(owner, []).append(mib)
        for held in groups.values():
            worst = max([worst, *(mib - held[0] for mib in held)])
    named = any(held for _, _, held in samples)  # nvidia-smi could tell whose memory it was
    out["trial_mib"] = worst if named else None
    out["memory_ok"] = worst <= tolerance and end - base <= tolerance
    return out


def _allocated(sweep_dir: Path) -> int | None:
    """The most a warm rank's allocator counter grew, in bytes: from after its first
    trial to after a later one (``None`` where no rank counted: cold, or CPU)."""
    growth: list[int] = []
    for log in sweep_dir.glob("warm-*.log"):
        first: dict[str, int] = {}
        for match in _ALLOCATED.finditer(log.read_text(errors="replace")):
            rank, counted = match.group(1), int(match.group(2))
            growth.append(counted - first.setdefault(rank, counted))
    return max(growth) if growth else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--trial-seconds", type=float, default=10.0)
    parser.add_argument("--modes", default="cold,warm")
    parser.add_argument("--tolerance-mib", type=int, default=64)
    parser.add_argument("--settle-seconds", type=float, default=10.0)
    parser.add_argument("--cpu", action="store_true", help="check the script itself on CPU")
    options = parser.parse_args()
    if not options.cpu and shutil.which("nvidia-smi") is None:
        print("gpu_memory_check: no nvidia-smi here; run it on a GPU machine (or give --cpu)")
        return 2
    results = [run_mode(mode.strip(), options) for mode in options.modes.split(",") if mode]
    where = "CPU (--cpu)" if options.cpu else ", ".join(_smi("gpu=name")[0])
    print(f"{options.trials} trials of {options.trial_seconds:g} s, 2 workers, on {where}")
    header = (
        f"{'mode':<5} {'done':>5} {'wall s':>7} {'ovh p50':>8} {'p90':>6} {'busy':>6} "
        f"{'util':>5} {'MiB before':>10} {'after':>6} {'trial MiB':>9} {'alloc +B':>8} ok"
    )
    print(header)
    ok = True
    for r in results:
        good = passed(r, options.trials, options.tolerance_mib)
        ok = ok and bool(good)
        print(
            f"{r['mode']:<5} {r['finished']:>2}/{r['runs']:<2} {r['wall']:>7.0f} "
            f"{_num(r.get('p50'), '.2f'):>8} {_num(r.get('p90'), '.2f'):>6} "
            f"{_num(r.get('busy'), '.0%'):>6} {_num(r.get('util'), '.0f'):>5} "
            f"{_num(r.get('before_mib'), 'd'):>10} {_num(r.get('after_mib'), 'd'):>6} "
            f"{_num(r.get('trial_mib'), 'd'):>9} {_num(r.get('allocated'), 'd'):>8} "
            f"{'yes' if good else 'NO'}"
        )
        if not good:
            print(str(r["output"])[-3000:])
    print("gpu_memory_check: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


def passed(result: dict[str, object], trials: int, tolerance_mib: int) -> bool:
    """A mode's verdict: every trial finished, and memory came back (the module docstring)."""
    grew = result.get("allocated")
    kept = not isinstance(grew, int) or grew <= tolerance_mib * 2**20
    done = result["exit"] == 0 and result["finished"] == trials
    return bool(done and result.get("memory_ok", True) and kept)


def _num(value: object, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


if __name__ == "__main__":
    sys.exit(main())
