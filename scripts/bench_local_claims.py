"""Benchmark: how long the local store takes to hand out the next run.

Each claim is one write transaction that reads every run so far and asks the
``sweeps`` engine for the next; the transaction holds the store's write lock
while the engine thinks, so claim time bounds how many workers one store can
feed. Prints, per method, the claim time as the sweep grows, and the claims per
second that ``--workers`` processes get together.

    python scripts/bench_local_claims.py [--runs 200] [--workers 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from wbsweep.backends.base import RunEnd
from wbsweep.backends.local import LocalBackend

PARAMETERS = {
    "learning_rate": {"distribution": "log_uniform_values", "min": 1e-6, "max": 1e-2},
    "per_device_train_batch_size": {"values": [8, 16, 32, 64]},
    "warmup_ratio": {"distribution": "uniform", "min": 0.0, "max": 0.2},
}


def config(method: str) -> dict:
    return {
        "method": method,
        "metric": {"name": "objective", "goal": "minimize"},
        "parameters": PARAMETERS,
    }


def claim_and_finish(store: LocalBackend, sweep_id: str) -> float:
    started = time.perf_counter()
    run = store.claim_next(sweep_id, "bench")
    elapsed = time.perf_counter() - started
    assert run is not None
    store.record_result(run.id, float(run.params["learning_rate"]), {})
    store.finish_run(run.id, RunEnd(0))
    return elapsed


def growth(method: str, runs: int, directory: Path) -> None:
    store = LocalBackend(directory / f"{method}.db")
    sweep_id = store.create(config(method))
    times = [claim_and_finish(store, sweep_id) for _ in range(runs)]
    marks = sorted({1, runs // 4, runs // 2, runs})
    shown = ", ".join(f"run {n}: {times[n - 1] * 1000:.0f} ms" for n in marks)
    print(f"{method:>6}: median {statistics.median(times) * 1000:.0f} ms per claim; {shown}")


def _worker(path: str, sweep_id: str, count: int) -> None:
    store = LocalBackend(path)
    for _ in range(count):
        claim_and_finish(store, sweep_id)


def concurrent(method: str, workers: int, per_worker: int, directory: Path) -> None:
    path = str(directory / f"{method}-concurrent.db")
    sweep_id = LocalBackend(path).create(config(method))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(path, sweep_id, per_worker)) for _ in range(workers)]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    elapsed = time.perf_counter() - started
    total = len(LocalBackend(path).runs(sweep_id))
    print(
        f"{method:>6}: {workers} workers claimed {total} runs in {elapsed:.1f} s "
        f"({total / elapsed:.1f} claims/s, process start included)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        print(f"claim time as a sweep grows to {options.runs} runs:")
        for method in ("random", "bayes"):
            growth(method, options.runs, directory)
        print(f"{options.workers} concurrent workers, 25 claims each:")
        for method in ("random", "bayes"):
            concurrent(method, options.workers, 25, directory)


if __name__ == "__main__":
    main()
