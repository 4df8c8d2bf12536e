"""What a node reads from W&B while a big sweep runs: a full read against the live display's.

A sweep of ``--runs`` runs (1,000 by default) on the W&B test double
(``tests/wandb_double``, on this machine), all ended but ``--live`` of them. Each case
reads the sweep ``--reads`` times, and ``--ending`` runs end before each read after
the first:

- *runs()*: every run's config and summary, 100 runs a page (``wbsweep status``, once);
- *watch()*: the agent's live progress and ``status --watch``, every few seconds;
- *outlook()*: a node whose workers found nothing left, while other runs run;
- *unsettled_runs()*: each node's keeper, every few seconds.

    python scripts/bench_wandb_reads.py [--runs 1000] [--live 10] [--reads 5] [--ending 2]

Prints, per case, the requests of runs per read (pages of config and summary, pages
of ids) and the seconds per read, p50, after the first read. Not a CI test: it
takes about a minute.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

CONFIG = {
    "method": "random",
    "metric": {"name": "objective", "goal": "minimize"},
    "parameters": {"x": {"values": [1, 2, 3]}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--live", type=int, default=10, help="runs that still run")
    parser.add_argument("--reads", type=int, default=5)
    parser.add_argument("--ending", type=int, default=2, help="runs that end before each read")
    args = parser.parse_args()
    if args.live < args.ending * (args.reads - 1):
        parser.error("--live must be at least --ending x (--reads - 1)")

    from helpers import add_sweep_runs, post_to_double
    from wandb_double import WandbDouble

    from wbsweep.backends.wandb import WandbBackend

    rows = []
    with WandbDouble() as double:
        os.environ.update(double.env())
        for number, case in enumerate(("runs()", "watch()", "outlook()", "unsettled_runs()")):
            backend = WandbBackend(project=f"bench-{case.strip('()')}")
            sweep_id = backend.create(CONFIG)
            entity, project, _ = sweep_id.split("/")

            def end(run_id: str, entity: str = entity, project: str = project) -> None:
                body = {"complete": True, "exitcode": 0}
                post_to_double(double, f"/files/{entity}/{project}/{run_id}/file_stream", body)

            # Run ids are W&B-wide.
            ids = add_sweep_runs(double, sweep_id, [f"c{number}r{k:05d}" for k in range(args.runs)])
            live = ids[: args.live]
            for run_id in ids[args.live :]:
                end(run_id)
            read = reader(backend, case, sweep_id)
            times, full, light = [], [], []
            for n in range(args.reads):
                if n:
                    for _ in range(args.ending):
                        end(live.pop())
                before = len(double.requests)
                started = time.perf_counter()
                read()
                took = time.perf_counter() - started
                pages = [v["perPage"] for op, v in double.requests[before:] if op == "Runs"]
                if n:  # the first read of watch() is a full one
                    times.append(took)
                    full.append(sum(1 for p in pages if p != 1000))
                    light.append(sum(1 for p in pages if p == 1000))
            rows.append(
                (case, statistics.median(full), statistics.median(light), statistics.median(times))
            )
    print(f"{args.runs} runs, {args.live} running at first, {args.ending} ending before each read")
    print("| read | pages of config and summary | pages of ids | s per read (p50) |")
    print("| --- | --- | --- | --- |")
    for case, full_pages, light_pages, took in rows:
        print(f"| {case} | {full_pages:g} | {light_pages:g} | {took:.3f} |")


def reader(backend: Any, case: str, sweep_id: str) -> Callable[[], object]:
    if case == "watch()":
        return backend.watch(sweep_id)
    method = getattr(backend, case.strip("()"))
    return lambda: method(sweep_id)


if __name__ == "__main__":
    main()
