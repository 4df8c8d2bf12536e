"""Benchmark: how fast the local store hands out the next run, as sweeps and worker pools grow.

For each method (``--methods``), sweep size (``--runs``) and number of worker
processes (``--workers``) it makes a fresh store with one sweep whose
``run_cap`` is the size, then measures the claims of the sweep's last runs:

1. *Pre-fill.* All but the last ``--measure`` runs (``--bayes-measure`` for
   bayes, whose engine is slow) are inserted straight into the store as
   finished runs, each with an objective and three history rows, as a trial
   with three evaluations leaves them; grid pre-fills distinct grid points, so
   the engine hands out the rest. A 1,000-run sweep so takes no 1,000 real claims
   to set up, and the claims measured are the ones at that size.
2. *Claims.* The workers (forked from this process, so the engine is imported
   once) wait at a barrier, then each loops until ``claim_next`` says no run is
   left: claim, report one history row and the result, ``finish_run``, as a
   worker whose trials take no time. Process start is not timed; each worker's
   first claim reads the whole sweep (its own cache is cold: at 16 workers
   those are most of the p90), later ones only what changed.
3. *Per claim*, each worker records, with timing wrappers installed in the
   worker only (none is in the store's code):

   * latency: the wall time of ``claim_next``;
   * engine: the time inside ``sweeps.next_run`` (every call the claim made,
     a choice made ahead that went stale included);
   * wait: the time spent waiting for other processes: ``BEGIN IMMEDIATE``
     waiting for another writer, and a bayes claim waiting for its turn to
     choose (``SqliteFile.turn``);
   * store = latency - engine - wait: the store's own part, wall time (on a
     busy machine it also holds time the process waited for a CPU), and its CPU
     time (the claim's process CPU time minus the engine's and the polling
     while it waited for its turn);
   * lock held: from ``BEGIN IMMEDIATE`` to ``COMMIT`` (the engine's time is in
     it where the engine chooses inside the lock: grid).

   Only claims that got a run count (a worker's last claim, which finds none
   left, does not). claims/s is the claims measured over the wall time from
   the barrier to the last worker's end, with every worker's result and finish
   writes in between; served is how many workers got a run at all (SQLite's
   busy handler sleeps up to 100 ms between tries, so a worker that just wrote
   tends to win the lock again, and waiters may get nothing).

Each worker limits BLAS to ``--blas-threads`` threads (default 1): 16 processes
on a 2-core machine, each with OpenBLAS's own thread pool, make the bayes fit
ten times slower than on a machine with a core per worker.

Checks, printed per row: the runs in the store number exactly ``run_cap``, all
finished, and no two got the same params (grid: every point at most once, so a
full grid is every point once).

    python scripts/bench_local_claims.py                  # full: 10, 100, 1000 runs x 1, 16 workers
    python scripts/bench_local_claims.py --quick          # a short run
    python scripts/bench_local_claims.py --runs 1000 --workers 16 --methods grid
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import json
import math
import multiprocessing
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wbsweep.backends._sqlite import SqliteFile
from wbsweep.backends.base import RunEnd, RunState
from wbsweep.backends.local import LocalBackend

METRIC = {"name": "objective", "goal": "minimize"}
PARAMETERS: dict[str, Any] = {
    "learning_rate": {"distribution": "log_uniform_values", "min": 1e-6, "max": 1e-2},
    "per_device_train_batch_size": {"values": [8, 16, 32, 64]},
    "warmup_ratio": {"distribution": "uniform", "min": 0.0, "max": 0.2},
}


def grid_parameters(runs: int) -> dict[str, Any]:
    """A grid of at least 1,200 points, and 20% more points than ``runs``: ``run_cap`` ends it."""
    seeds = max(10, math.ceil(1.2 * runs / 120))
    return {
        "learning_rate": {"values": [round(1e-5 * 1.5**k, 10) for k in range(12)]},
        "warmup_steps": {"values": list(range(0, 100, 10))},
        "seed": {"values": list(range(seeds))},
    }


def sweep_config(method: str, runs: int) -> dict[str, Any]:
    parameters = grid_parameters(runs) if method == "grid" else PARAMETERS
    return {"method": method, "metric": METRIC, "parameters": parameters, "run_cap": runs}


def objective(params: dict[str, Any]) -> float:
    """A smooth made-up loss, so bayes has something to fit."""
    lr = float(params["learning_rate"])
    warmup = float(params.get("warmup_ratio", params.get("warmup_steps", 0)))
    return (math.log10(lr) + 4) ** 2 + (warmup - 0.1) ** 2 + random.gauss(0, 0.01)


def prefill(store: LocalBackend, sweep_id: str, config: dict[str, Any], count: int) -> None:
    """``count`` finished runs with results and histories, inserted in one transaction."""
    parameters = config["parameters"]
    grid = itertools.product(*(spec.get("values", [None]) for spec in parameters.values()))
    now = time.time()
    with store._db.transaction(write=True) as db:
        for seq in range(count):
            if config["method"] == "grid":
                params = dict(zip(parameters, next(grid), strict=True))
            else:
                params = {
                    "learning_rate": 10 ** random.uniform(-6, -2),
                    "per_device_train_batch_size": random.choice([8, 16, 32, 64]),
                    "warmup_ratio": random.uniform(0.0, 0.2),
                }
            run_id = f"pre{seq:07d}"
            value = objective(params)
            db.execute(
                "INSERT INTO runs (id, sweep_id, seq, state, params, objective, metrics, exit_code,"
                " worker, created_at, claimed_at, started_at, finished_at, heartbeat_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, sweep_id, seq, RunState.FINISHED.value, json.dumps(params), value)
                + (json.dumps({"eval_loss": value}), 0, "prefill", now, now, now, now, now),
            )
            for step in (1, 2, 3):
                metrics = {"objective": value + (3 - step) * 0.1, "epoch": float(step)}
                db.execute(
                    "INSERT INTO history (run_id, step, metrics, at) VALUES (?,?,?,?)",
                    (run_id, step * 10, json.dumps(metrics), now),
                )


# -- one worker process ------------------------------------------------------------------


@dataclass
class _Clock:
    """What the timing wrappers saw during the current claim."""

    engine: float = 0.0
    engine_cpu: float = 0.0
    engine_calls: int = 0
    wait: float = 0.0
    wait_cpu: float = 0.0
    held: float = 0.0

    def reset(self) -> None:
        self.engine = self.engine_cpu = self.wait = self.wait_cpu = self.held = 0.0
        self.engine_calls = 0


def _install_timers(clock: _Clock) -> None:
    """Wrap the engine call and the store's transactions (in this worker process only)."""
    sweeps: Any = importlib.import_module("sweeps")

    next_run = sweeps.next_run

    def timed_next_run(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return next_run(*args, **kwargs)
        finally:
            clock.engine += time.perf_counter() - wall
            clock.engine_cpu += time.process_time() - cpu
            clock.engine_calls += 1

    begun = SqliteFile._begun

    @contextlib.contextmanager
    def timed_begun(db: Any, begin: str) -> Iterator[None]:
        asked = time.perf_counter()
        with begun(db, begin):
            got = time.perf_counter()
            yield
        if begin == "BEGIN IMMEDIATE":
            clock.wait += got - asked
            clock.held += time.perf_counter() - got

    sweeps.next_run = timed_next_run
    SqliteFile._begun = staticmethod(timed_begun)  # type: ignore[method-assign]
    turn = getattr(SqliteFile, "turn", None)  # None in a wbsweep from before turns
    if turn is None:
        return

    @contextlib.contextmanager
    def timed_turn(self: SqliteFile, name: str, timeout: float = 60.0) -> Iterator[bool]:
        asked, cpu = time.perf_counter(), time.process_time()
        with turn(self, name, timeout) as had:
            clock.wait += time.perf_counter() - asked
            clock.wait_cpu += time.process_time() - cpu  # polling for the turn
            yield had

    SqliteFile.turn = timed_turn  # type: ignore[method-assign]


def _worker(
    path: str, sweep_id: str, name: str, blas_threads: int, barrier: Any, results: Any
) -> None:
    import numpy
    from threadpoolctl import threadpool_limits  # scikit-learn's, so the engine's

    threadpool_limits(blas_threads)

    # A forked worker starts with its parent's random state; a real one (its own
    # interpreter) does not, and workers drawing alike would choose alike.
    numpy.random.seed()
    random.seed()
    clock = _Clock()
    _install_timers(clock)
    store = LocalBackend(path)
    claims = []
    barrier.wait()
    started = time.perf_counter()
    while True:
        clock.reset()
        wall, cpu = time.perf_counter(), time.process_time()
        run = store.claim_next(sweep_id, name)
        latency, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if run is None:
            break
        claims.append(
            {
                "latency": latency,
                "engine": clock.engine,
                "wait": clock.wait,
                "held": clock.held,
                "store_cpu": cpu - clock.engine_cpu - clock.wait_cpu,
            }
        )
        value = objective(run.params)
        store.record_history(run.id, 10, {"objective": value})
        store.record_result(run.id, value, {"eval_loss": value})
        store.finish_run(run.id, RunEnd(0))
    results.put((claims, started, time.perf_counter(), getattr(store, "stale_choices", 0)))


# -- one case ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    method: str
    runs: int
    workers: int
    claims: list[dict[str, float]]
    served: int
    wall: float
    stale: int
    check: str


def warm_up() -> None:
    """Import every search method's modules here once (sklearn for bayes): forks inherit them."""
    sweeps: Any = importlib.import_module("sweeps")

    runs = [
        sweeps.SweepRun(
            name=f"r{n}",
            state="finished",
            config={"x": {"value": n}},
            summary_metrics={"objective": float(n)},
        )
        for n in range(3)
    ]
    parameters = {"x": {"values": [0, 1, 2, 3]}}
    for method in ("random", "grid", "bayes"):
        sweeps.next_run({"method": method, "metric": METRIC, "parameters": parameters}, runs)


def run_case(
    method: str, runs: int, workers: int, measure: int, blas_threads: int, directory: Path
) -> Row:
    path = directory / f"{method}-{runs}-{workers}.db"
    store = LocalBackend(path)
    config = sweep_config(method, runs)
    sweep_id = store.create(config)
    prefill(store, sweep_id, config, runs - min(runs, measure))
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(workers + 1), ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker, args=(str(path), sweep_id, f"w{i}", blas_threads, barrier, results)
        )
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    barrier.wait()
    done = [results.get() for _ in procs]  # before join: a full queue blocks its writer
    for proc in procs:
        proc.join()
    claims = [claim for worker_claims, *_ in done for claim in worker_claims]
    wall = max(end for _, _, end, _ in done) - min(start for _, start, _, _ in done)
    stale = sum(count for *_, count in done)
    served = sum(1 for worker_claims, *_ in done if worker_claims)
    return Row(method, runs, workers, claims, served, wall, stale, check(store, sweep_id, runs))


def check(store: LocalBackend, sweep_id: str, cap: int) -> str:
    """``ok``, or what is wrong: the run count against ``run_cap``, states, repeated params."""
    runs = store.runs(sweep_id)
    params = {json.dumps(run.params, sort_keys=True) for run in runs}
    problems = []
    if len(runs) != cap:
        problems.append(f"{len(runs)} runs for run_cap {cap}")
    if any(run.state is not RunState.FINISHED for run in runs):
        problems.append("not all finished")
    if len(params) != len(runs):
        problems.append(f"{len(runs) - len(params)} repeated params")
    return "; ".join(problems) or "ok"


# -- the table ---------------------------------------------------------------------------

COLUMNS = [
    ("method", 6),
    ("runs", 5),
    ("workers", 7),
    ("claims", 6),
    ("served", 6),
    ("latency p50", 11),
    ("p90", 7),
    ("claims/s", 8),
    ("engine p50", 10),
    ("store p50", 9),
    ("p90", 6),
    ("cpu p50", 7),
    ("wait p50", 8),
    ("lock held p50", 13),
    ("stale", 5),
    ("check", 5),
]


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f}"


def cells(row: Row) -> list[str]:
    claims = row.claims
    latency = [c["latency"] for c in claims]
    store = [c["latency"] - c["engine"] - c["wait"] for c in claims]
    return [
        row.method,
        str(row.runs),
        str(row.workers),
        str(len(claims)),
        str(row.served),
        _ms(latency, 0.5),
        _ms(latency, 0.9),
        f"{len(claims) / row.wall:.1f}" if row.wall > 0 else "-",
        _ms([c["engine"] for c in claims], 0.5),
        _ms(store, 0.5),
        _ms(store, 0.9),
        _ms([c["store_cpu"] for c in claims], 0.5),
        _ms([c["wait"] for c in claims], 0.5),
        _ms([c["held"] for c in claims], 0.5),
        str(row.stale),
        row.check,
    ]


def print_row(values: list[str]) -> None:
    padded = (value.rjust(width) for value, (_, width) in zip(values, COLUMNS, strict=True))
    print("| " + " | ".join(padded) + " |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="10,100,1000", help="sweep sizes (run_cap)")
    parser.add_argument("--workers", default="1,16", help="worker process counts")
    parser.add_argument("--methods", default="random,grid,bayes")
    parser.add_argument("--measure", type=int, default=200, help="claims measured per case")
    parser.add_argument("--bayes-measure", type=int, default=40, help="the same, for bayes")
    parser.add_argument("--blas-threads", type=int, default=1, help="BLAS threads per worker")
    parser.add_argument("--quick", action="store_true", help="10 and 100 runs, 1 and 4 workers")
    options = parser.parse_args(argv)
    if options.quick:
        options.runs, options.workers = "10,100", "1,4"
        options.measure, options.bayes_measure = 40, 8
    sizes = [int(n) for n in options.runs.split(",")]
    pools = [int(n) for n in options.workers.split(",")]
    methods = options.methods.split(",")
    print(f"claims measured per case: {options.measure} (bayes {options.bayes_measure}); ms")
    print_row([name for name, _ in COLUMNS])
    print("|" + "|".join("-" * (w + 2) for _, w in COLUMNS) + "|")
    warm_up()
    started = time.perf_counter()
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for method, runs, workers in itertools.product(methods, sizes, pools):
            measure = options.bayes_measure if method == "bayes" else options.measure
            row = run_case(method, runs, workers, measure, options.blas_threads, Path(tmp))
            bad += row.check != "ok"
            print_row(cells(row))
    print(f"total {time.perf_counter() - started:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
