"""The local store's claim path: choices made ahead of the write lock, turns, kept runs.

A claim that chooses ahead (bayes by default; grid here, where a repeated
point shows) must still never hand out a grid point twice nor pass
``run_cap``, whatever other claims do between its snapshot and its write.
"""

from __future__ import annotations

import functools
import importlib
import json
import multiprocessing
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from wbsweep.backends._rows import SeenRuns, histories, run_rows
from wbsweep.backends._sqlite import SqliteFile
from wbsweep.backends.base import RunEnd, RunState
from wbsweep.backends.local import LocalBackend

GRID: dict[str, Any] = {
    "method": "grid",
    "metric": {"name": "objective", "goal": "minimize"},
    "parameters": {"a": {"values": list(range(6))}, "b": {"values": [0, 1, 2, 3]}},
}


class AheadGrid(LocalBackend):
    """Grid chosen ahead, as bayes is, so a stale choice would repeat a point."""

    choose_ahead = frozenset({"grid", "bayes"})


class Rivalled(AheadGrid):
    """Between its snapshot and its write, a rival claims ``rival_claims`` times in all."""

    def __init__(self, path: Path, rival_claims: int) -> None:
        super().__init__(path)
        self.rival = LocalBackend(path)  # grid chosen inside the lock: it takes no turn
        self.rival_claims = rival_claims
        self.chosen: list[dict[str, Any] | None] = []  # what each choice made ahead was
        self.rivals: list[dict[str, Any]] = []

    def _choose_ahead(self, known: Any, max_retries: int) -> Any:
        ahead = super()._choose_ahead(known, max_retries)
        self.chosen.append(ahead.params if ahead is not None else None)
        if len(self.rivals) < self.rival_claims:
            run = self.rival.claim_next(known.sweep.id, "rival")
            assert run is not None
            self.rivals.append(run.params)
        return ahead


class Racing(AheadGrid):
    """Chooses ahead with no turns, and holds each choice until another claim lands."""

    take_turns = False

    def _choose_ahead(self, known: Any, max_retries: int) -> Any:
        ahead = super()._choose_ahead(known, max_retries)
        deadline = time.monotonic() + 0.5  # the others may all be done
        while ahead is not None and time.monotonic() < deadline:
            if len(self.runs(known.sweep.id)) != ahead.runs:
                break  # this choice is stale now
            time.sleep(0.002)
        return ahead


@pytest.mark.parametrize(
    ("rival_claims", "stale"),
    [(0, 0), (1, 1), (2, 2)],  # 2 = every try ahead: the claim chooses inside the lock
)
def test_a_choice_that_went_stale_is_made_again_never_handed_out(
    tmp_path: Path, rival_claims: int, stale: int
) -> None:
    store = Rivalled(tmp_path / "store.db", rival_claims)
    sweep_id = store.create({**GRID, "run_cap": 5})
    first = LocalBackend(store.path).claim_next(sweep_id, "w0")
    assert first is not None

    run = store.claim_next(sweep_id, "w1")
    assert run is not None and run.worker == "w1"
    assert store.stale_choices == stale
    # Each stale choice was the very point the rival just took: taken, it would repeat.
    assert store.chosen[:stale] == store.rivals
    claimed = [first.params, *store.rivals, run.params]
    assert len({json.dumps(p, sort_keys=True) for p in claimed}) == len(claimed) == 2 + stale
    assert [r.id for r in store.runs(sweep_id)][-1] == run.id


def test_choices_made_ahead_stop_at_run_cap_and_at_the_end_of_the_grid(tmp_path: Path) -> None:
    store = Rivalled(tmp_path / "store.db", rival_claims=1)
    capped = store.create({**GRID, "run_cap": 2})
    assert store.claim_next(capped, "w") is not None  # the rival took the other one
    assert store.claim_next(capped, "w") is None and len(store.runs(capped)) == 2

    small = AheadGrid(store.path)
    grid = small.create({**GRID, "parameters": {"a": {"values": [1, 2]}}})
    points = [run.params["a"] for run in iter(lambda: small.claim_next(grid, "w"), None)]
    assert sorted(points) == [1, 2]


def test_preempted_runs_and_crashed_reruns_still_come_first(tmp_path: Path) -> None:
    store = AheadGrid(tmp_path / "store.db")
    sweep_id = store.create({**GRID, "run_cap": 3})
    kept, crashed = store.claim_next(sweep_id, "w"), store.claim_next(sweep_id, "w")
    assert kept is not None and crashed is not None
    store.finish_run(kept.id, RunEnd(143, preempted=True))
    store.finish_run(crashed.id, RunEnd(None))  # killed: crashed

    resumed = store.claim_next(sweep_id, "w2")
    assert resumed is not None and resumed.id == kept.id and resumed.worker == "w2"
    rerun = store.claim_next(sweep_id, "w3")
    assert rerun is not None and rerun.retry_of == crashed.id and rerun.params == crashed.params
    fresh = store.claim_next(sweep_id, "w4")  # a rerun does not count toward run_cap
    assert fresh is not None and fresh.params not in (kept.params, crashed.params)
    assert store.claim_next(sweep_id, "w5") is None


@pytest.mark.parametrize("kind", [LocalBackend, AheadGrid], ids=["in-lock", "ahead"])
def test_a_chain_of_crashed_reruns_ends_at_max_retries_and_counts_once(
    tmp_path: Path, kind: type[LocalBackend]
) -> None:
    store = kind(tmp_path / "store.db")
    sweep_id = store.create({**GRID, "run_cap": 2})
    first, second = store.claim_next(sweep_id, "w"), store.claim_next(sweep_id, "w")
    assert first is not None and second is not None
    store.finish_run(second.id, RunEnd(0))
    crashed = first
    for _ in range(2):  # max_retries=2: the params run twice more
        store.finish_run(crashed.id, RunEnd(None))
        rerun = store.claim_next(sweep_id, "w", max_retries=2)
        assert rerun is not None and rerun.retry_of == crashed.id
        assert rerun.params == first.params
        crashed = rerun
    store.finish_run(crashed.id, RunEnd(None))
    assert store.claim_next(sweep_id, "w", max_retries=2) is None  # the chain is done, cap met
    assert store.maybe_finish_sweep(sweep_id, max_retries=2)
    assert len(store.runs(sweep_id)) == 4


def _claim_all(make: Any, sweep_id: str, worker: str, out: str, start: Any) -> None:
    for method in ("grid", "random", "bayes"):  # imported late by the engine: not in the race
        importlib.import_module(f"sweeps.{method}_search")
    store = make()
    start.wait()
    claimed = []
    while (run := store.claim_next(sweep_id, worker)) is not None:
        claimed.append(run.params)
        time.sleep(0.03)  # the trial: every worker gets to claim while the others train
        store.record_result(run.id, float(run.params.get("a", 0)), {})
        store.finish_run(run.id, RunEnd(0))
    Path(out).write_text(json.dumps({"claimed": claimed, "stale": store.stale_choices}))


def _race(tmp_path: Path, config: dict[str, Any], makers: list[Any]) -> tuple[list[Any], int]:
    """Every maker's store claims from one sweep in its own process, all starting at once."""
    sweep_id = LocalBackend(tmp_path / "store.db").create(config)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(len(makers))
    outs = [str(tmp_path / f"w{i}.json") for i in range(len(makers))]
    workers = [
        ctx.Process(target=_claim_all, args=(make, sweep_id, f"w{i}", out, start))
        for i, (make, out) in enumerate(zip(makers, outs, strict=True))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(180)
        assert worker.exitcode == 0
    results = [json.loads(Path(out).read_text()) for out in outs]
    claimed = [tuple(sorted(p.items())) for r in results for p in r["claimed"]]
    runs = LocalBackend(tmp_path / "store.db").runs(sweep_id)
    assert len(runs) == len(claimed) and all(run.state is RunState.FINISHED for run in runs)
    return claimed, sum(r["stale"] for r in results)


def test_processes_racing_ahead_never_share_a_grid_point_nor_pass_run_cap(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    racing = functools.partial(Racing, path)
    in_lock = functools.partial(LocalBackend, path)
    claimed, stale = _race(tmp_path, {**GRID, "run_cap": 20}, [racing] * 4 + [in_lock] * 4)
    assert len(claimed) == 20 and len(set(claimed)) == 20  # run_cap exact, no point twice
    assert stale > 0  # the choices made ahead did go stale, and were made again


def test_bayes_claims_from_several_processes_take_turns_and_keep_run_cap(tmp_path: Path) -> None:
    config = {
        "method": "bayes",
        "metric": {"name": "objective", "goal": "minimize"},
        "parameters": {"a": {"min": 0.0, "max": 1.0}, "b": {"values": [1, 2, 3]}},
        "run_cap": 12,
    }
    claimed, stale = _race(
        tmp_path, config, [functools.partial(LocalBackend, tmp_path / "store.db")] * 4
    )
    assert len(claimed) == 12 and len(set(claimed)) == 12
    assert stale == 0  # claimers took turns: no choice went stale


def test_seen_runs_read_as_a_full_read_does_after_every_kind_of_change(tmp_path: Path) -> None:
    # Long enough that b's and c's heartbeats below stay fresh on a loaded machine.
    store = LocalBackend(tmp_path / "store.db", heartbeat_timeout=1.5)
    sweep_id = store.create({**GRID, "method": "random", "run_cap": 20})
    seen = SeenRuns(sweep_id, with_history=True)

    def same() -> None:
        db = sqlite3.connect(store.path)
        db.row_factory = sqlite3.Row
        try:
            assert seen.read(db) == run_rows(db, sweep_id)
            assert seen.histories == histories(db, "sweep_id", sweep_id)
            full = run_rows(db, sweep_id)
            assert seen.live == [n for n, run in enumerate(full) if not run.state.terminal]
            crashed_or_rerun = [n for n, r in enumerate(full) if r.retry_of or r.state == "crashed"]
            assert seen.linked == crashed_or_rerun
        finally:
            db.close()

    same()  # an empty sweep
    runs = [store.claim_next(sweep_id, "w") for _ in range(4)]
    same()
    assert all(run is not None for run in runs)
    a, b, c, d = (run.id for run in runs if run is not None)
    store.record_history(a, 1, {"objective": 0.5})
    store.record_history(b, 1, {"objective": 0.7})
    same()
    store.record_history(a, 2, {"objective": 0.4})
    store.record_result(a, 0.4, {})
    store.finish_run(a, RunEnd(0))
    store.finish_run(b, RunEnd(143, preempted=True))
    same()
    assert store.claim_next(sweep_id, "w2") is not None  # resumes b
    time.sleep(1.6)  # d's worker went silent: the next claim records it crashed
    store.heartbeat(b)
    store.heartbeat(c)
    rerun = store.claim_next(sweep_id, "w3")
    assert rerun is not None and rerun.retry_of == d
    same()


def test_a_turn_is_one_process_at_a_time_and_waits_only_so_long(tmp_path: Path) -> None:
    db = SqliteFile(tmp_path / "store.db")
    with db.turn("claim") as had:
        assert had
        started = time.monotonic()
        with db.turn("claim", timeout=0.1) as second:  # another open file: as another process
            assert not second
        assert 0.1 <= time.monotonic() - started < 2
        with db.turn("other", timeout=0.1) as other:
            assert other
    with db.turn("claim", timeout=0.1) as again:
        assert again
