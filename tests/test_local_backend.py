"""The local store: claims are atomic, run_cap exact, states recorded as users see them."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from wbsweep.backends import base
from wbsweep.backends.local import LocalBackend
from wbsweep.errors import SweepNotFoundError, WbsweepError

GRID = {
    "method": "grid",
    "metric": {"name": "objective", "goal": "minimize"},
    "parameters": {"a": {"values": [1, 2, 3]}, "b": {"values": ["x", "y"]}},
}


def test_grid_claims_every_point_once_then_sweep_finishes(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "s.db")
    sweep_id = store.create(GRID)
    seen = []
    while (run := store.claim_next(sweep_id, "w0")) is not None:
        assert run.state == base.RUNNING and run.claimed_at is not None
        seen.append((run.params["a"], run.params["b"]))
        store.record_result(run.id, run.params["a"], {"eval_loss": 0.5})
        assert store.finish_run(run.id, exit_code=0) == base.FINISHED
    assert sorted(seen) == [(a, b) for a in (1, 2, 3) for b in ("x", "y")]
    assert store.maybe_finish_sweep(sweep_id)
    assert store.sweep(sweep_id).state == base.SWEEP_FINISHED


def test_run_cap_is_exact_and_paused_sweeps_hand_out_nothing(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "s.db")
    config = {**GRID, "method": "random", "run_cap": 2}
    sweep_id = store.create(config)
    store.set_state(sweep_id, base.SWEEP_PAUSED)
    assert store.claim_next(sweep_id, "w") is None
    store.set_state(sweep_id, base.SWEEP_RUNNING)
    assert store.claim_next(sweep_id, "w") is not None
    assert store.claim_next(sweep_id, "w") is not None
    assert store.claim_next(sweep_id, "w") is None
    assert len(store.runs(sweep_id)) == 2


@pytest.mark.parametrize(
    ("exit_code", "stopped", "state"),
    [
        (0, False, "finished"),
        (1, False, "failed"),
        (-9, False, "crashed"),
        (137, False, "crashed"),
        (143, True, "stopped"),
    ],
)
def test_finish_states(tmp_path: Path, exit_code: int, stopped: bool, state: str) -> None:
    store = LocalBackend(tmp_path / "s.db")
    sweep_id = store.create(GRID)
    run = store.claim_next(sweep_id, "w")
    assert run is not None
    assert store.finish_run(run.id, exit_code=exit_code, stopped=stopped) == state
    (recorded,) = store.runs(sweep_id)
    assert (recorded.state, recorded.exit_code) == (state, exit_code)
    assert recorded.finished_at is not None
    # A finished run never changes again.
    assert store.finish_run(run.id, exit_code=0) == state


def test_result_and_first_step_recorded(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "s.db")
    sweep_id = store.create(GRID)
    run = store.claim_next(sweep_id, "w")
    assert run is not None
    store.record_started(run.id)
    first = store.runs(sweep_id)[0].started_at
    store.record_started(run.id)
    store.record_result(run.id, 0.25, {"eval_loss": 0.25, "eval_accuracy": float("nan")})
    (recorded,) = store.runs(sweep_id)
    assert recorded.started_at == first
    assert recorded.objective == 0.25
    assert recorded.metrics == {"eval_loss": 0.25, "eval_accuracy": None}


def test_unknown_sweep_and_bad_state(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "s.db")
    with pytest.raises(SweepNotFoundError, match="nope"):
        store.runs("nope")
    sweep_id = store.create(GRID)
    with pytest.raises(WbsweepError, match="BOGUS"):
        store.set_state(sweep_id, "BOGUS")
    store.set_state(sweep_id, base.SWEEP_FINISHED)
    with pytest.raises(WbsweepError, match="finished"):
        store.set_state(sweep_id, base.SWEEP_RUNNING)


def _claim_all(path: str, sweep_id: str, worker: str, out: str) -> None:
    store = LocalBackend(path)
    claimed = []
    while (run := store.claim_next(sweep_id, worker)) is not None:
        claimed.append(run.params)
        store.finish_run(run.id, exit_code=0)
    Path(out).write_text(json.dumps(claimed))


def test_concurrent_processes_never_share_a_run(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = LocalBackend(path)
    config = {
        "method": "grid",
        "metric": {"name": "objective", "goal": "minimize"},
        "parameters": {"a": {"values": list(range(6))}, "b": {"values": [0, 1, 2, 3]}},
    }
    sweep_id = store.create(config)
    ctx = multiprocessing.get_context("spawn")
    outs = [str(tmp_path / f"w{i}.json") for i in range(6)]
    workers = [
        ctx.Process(target=_claim_all, args=(path, sweep_id, f"w{i}", out))
        for i, out in enumerate(outs)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    claimed = [tuple(sorted(p.items())) for out in outs for p in json.loads(Path(out).read_text())]
    assert len(claimed) == 24
    assert len(set(claimed)) == 24
    assert len(store.runs(sweep_id)) == 24


def test_engine_numpy_values_are_stored_as_plain_json(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "s.db")
    config = {
        "method": "random",
        "metric": {"name": "objective", "goal": "minimize"},
        "parameters": {
            "steps": {"distribution": "q_uniform", "min": 8, "max": 64, "q": 8},
            "width": {"distribution": "q_log_uniform_values", "min": 1, "max": 64, "q": 1},
            "lr": {"distribution": "uniform", "min": 0.0, "max": 1.0},
        },
    }
    sweep_id = store.create(config)
    for _ in range(5):
        run = store.claim_next(sweep_id, "w")
        assert run is not None
        assert {type(v) for v in run.params.values()} <= {int, float}
        assert json.loads(json.dumps(run.params)) == run.params
