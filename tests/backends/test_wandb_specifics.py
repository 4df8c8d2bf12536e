"""What only the W&B backend promises: one project rule, its workers, the preflight."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from helpers import add_sweep_runs, post_to_double
from wandb_double import WandbDouble, reset_wandb

from wbsweep.backends import backend_for_sweep, open_backend
from wbsweep.backends.base import DriveOptions
from wbsweep.backends.wandb import WandbBackend, wandb_executable
from wbsweep.errors import (
    EXIT_LOGIN,
    EXIT_UNREACHABLE,
    WandbLoginError,
    WandbUnreachableError,
)
from wbsweep.shape import WORKER_ENV

CONFIG: dict[str, Any] = {
    "method": "grid",
    "metric": {"name": "objective", "goal": "minimize"},
    "parameters": {"a": {"values": [1, 2]}},
}


def _add_runs(double: WandbDouble, sweep_id: str, count: int, first: int = 0) -> list[str]:
    """``count`` running runs of the sweep, ``r0000`` (``first``) on."""
    return add_sweep_runs(double, sweep_id, [f"r{n:04d}" for n in range(first, first + count)])


@pytest.fixture
def double(wandb_double: WandbDouble, monkeypatch: pytest.MonkeyPatch) -> WandbDouble:
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    return wandb_double


def test_a_node_joins_with_a_real_wandb_agent(double: WandbDouble) -> None:
    backend = WandbBackend()
    sweep_id = backend.create(CONFIG)
    assert sweep_id.startswith(f"{double.entity}/wbsweep/")
    assert backend.location == f"W&B at {double.base_url}"
    assert backend.worker_argv(sweep_id, "host-w0") == [wandb_executable(), "agent", sweep_id]
    assert backend.worker_stagger == 2.5
    assert backend.queue is None
    bare = sweep_id.rsplit("/", 1)[-1]
    assert backend.resolve(bare) == sweep_id
    assert backend.worker_argv(bare, "host-w0")[-1] == sweep_id
    # `wbsweep agent --count N`: each `wandb agent` runs at most N trials, as its own --count.
    assert backend.worker_argv(sweep_id, "host-w0", 2)[1:] == ["agent", "--count", "2", sweep_id]
    assert backend.sweep(bare).id == sweep_id
    assert backend.sweep_url(sweep_id) == f"{double.base_url}/{sweep_id.replace(bare, '')}" + (
        f"sweeps/{bare}"
    )


@pytest.mark.parametrize(
    ("explicit", "env", "in_config", "expected"),
    [
        ("explicit", "from-env", "from-file", "explicit"),
        (None, "from-env", "from-file", "from-env"),
        (None, None, "from-file", "from-file"),
        (None, None, None, "wbsweep"),
    ],
)
def test_one_project_rule_for_create_and_bare_ids(
    double: WandbDouble,
    monkeypatch: pytest.MonkeyPatch,
    explicit: str | None,
    env: str | None,
    in_config: str | None,
    expected: str,
) -> None:
    if env is not None:
        monkeypatch.setenv("WANDB_PROJECT", env)
    backend = WandbBackend(project=explicit)
    config = CONFIG if in_config is None else {**CONFIG, "project": in_config}
    entity, project, bare = backend.create(config).split("/")
    assert (entity, project) == (double.entity, expected)
    assert double.sweep(bare)["project"] == expected
    # A bare id has no sweep file to ask: explicit, then WANDB_PROJECT, then wbsweep.
    assert backend.resolve("abc").split("/")[1] == (explicit or env or "wbsweep")


def test_a_sweep_path_opens_the_backend_of_its_entity_and_project(double: WandbDouble) -> None:
    backend, sweep_id = backend_for_sweep("team/proj/abc")
    assert isinstance(backend, WandbBackend)
    assert (backend.entity, backend.project, sweep_id) == ("team", "proj", "team/proj/abc")
    assert backend.resolve("xyz") == "team/proj/xyz"
    assert isinstance(open_backend("wandb"), WandbBackend)


def test_drive_hands_the_trial_a_run_w_and_b_records(double: WandbDouble) -> None:
    backend = WandbBackend()
    sweep_id = backend.create(CONFIG)
    seen = []
    lines: list[str] = []
    backend.drive(sweep_id, seen.append, DriveOptions("node-w0", count=1, log=lines.append))
    (claimed,) = seen
    assert (claimed.reporter, claimed.wandb_mode, claimed.wandb_group) == (None, None, None)
    assert double.run(claimed.run_id)["sweep"] == sweep_id.rsplit("/", 1)[-1]
    assert claimed.params == {"a": 1}
    assert lines and claimed.run_id in lines[0] and "node-w0" in lines[0]


def test_a_rejected_key_and_an_unreachable_server_are_one_line_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with WandbDouble(require_key="k" * 40) as double:
        for key, value in double.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("WANDB_API_KEY", "b" * 40)
        reset_wandb()
        with pytest.raises(WandbLoginError, match="rejected the API key") as raised:
            WandbBackend()
        assert raised.value.exit_code == EXIT_LOGIN
        assert "b" * 40 not in str(raised.value)
        monkeypatch.delenv("WANDB_API_KEY")
        monkeypatch.setenv("NETRC", "/nonexistent/netrc")
        with pytest.raises(WandbLoginError, match="not logged in"):
            WandbBackend()
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    with pytest.raises(WandbUnreachableError, match="cannot reach W&B") as unreachable:
        WandbBackend()
    assert unreachable.value.exit_code == EXIT_UNREACHABLE


def test_a_trial_s_run_label_costs_three_small_requests_in_a_sweep_of_many_runs(
    double: WandbDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 0 labels its run before every trial: on W&B each query is a round trip.

    The label reads the sweep once, with one login check, and only the ids of
    its runs: with 150 runs (more than a page of full runs) still one request.
    """
    backend = WandbBackend()
    sweep_id = backend.create(CONFIG)
    _add_runs(double, sweep_id, 150)
    monkeypatch.setenv(WORKER_ENV, "node7-w1")
    before = len(double.operations())
    label = backend.run_label(sweep_id, "r0120")
    asked = [op for op in double.operations()[before:] if not op.startswith("POST /sdk/otel")]
    assert label.name.endswith("-121") and label.tags == ("wandb", "node7-w1")
    assert sorted(asked) == ["GetSweep", "Runs", "Viewer"], asked
    assert backend.run_label(sweep_id, "not-yet-listed").name.endswith("-151")


def test_a_warm_worker_s_sdk_agent_keeps_its_service_and_login_between_runs(
    double: WandbDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a warm worker's trials the SDK agent makes no new login check.

    The SDK's in-process agent tears down its service and makes a new
    ``wandb.Api`` (a ``Viewer`` query) before every run; a warm worker, which
    opens no run in its own process, skips both. ``_keep_service`` changes the
    SDK's agent module for the worker process: it is undone here.
    """
    from wandb.agents import pyagent

    from wbsweep import warm_wandb

    monkeypatch.setattr(pyagent, "wandb", pyagent.wandb)
    kept = warm_wandb._keep_service()
    assert kept is not None and pyagent.wandb is kept
    backend = WandbBackend()
    sweep_id = backend.create(CONFIG)
    starts: list[int] = []
    backend.drive(
        sweep_id,
        lambda claimed: starts.append(len(double.operations())),
        DriveOptions("warm-w0", count=2),
    )
    kept.close()
    between = double.operations()[starts[0] : starts[1]]
    assert len(starts) == 2 and "Heartbeat" in between, between  # the agent asked for run 2
    assert "Viewer" not in between, between


def test_the_keeper_and_an_idle_node_read_only_the_unended_runs_of_a_big_sweep(
    double: WandbDouble,
) -> None:
    """Each node's keeper polls W&B every few seconds, and so does a node whose workers
    found nothing left while others run: ended runs never come back to either.

    All 120 runs would take two pages of 100; the runs that have not ended, one.
    """
    backend = WandbBackend()
    sweep_id = backend.create(CONFIG)
    entity, project, _ = sweep_id.split("/")

    def end(run_id: str) -> None:
        ended = {"complete": True, "exitcode": 0 if run_id[-1] in "13579" else 1}
        post_to_double(double, f"/files/{entity}/{project}/{run_id}/file_stream", ended)

    def asked_for(read: Callable[[], Any]) -> tuple[Any, list[str]]:
        before = len(double.operations())
        got = read()
        return got, [
            op for op in double.operations()[before:] if not op.startswith("POST /sdk/otel")
        ]

    for run_id in _add_runs(double, sweep_id, 120):
        if run_id not in ("r0007", "r0099"):  # these two still run
            end(run_id)
    watched, asked = asked_for(lambda: backend.unsettled_runs(sweep_id))
    assert [run.id for run in watched] == ["r0007", "r0099"]
    assert asked.count("Runs") == 1, asked
    outlook, asked = asked_for(lambda: backend.outlook(sweep_id))
    assert outlook == "wait" and asked.count("Runs") == 1, asked
    states = {run.state.value for run in backend.runs(sweep_id)}
    assert len(backend.runs(sweep_id)) == 120 and len(states) == 3, states
    end("r0007")
    end("r0099")
    outlook, asked = asked_for(lambda: backend.outlook(sweep_id))
    assert outlook == "done" and asked.count("Runs") == 1, asked


def test_a_live_display_of_a_big_sweep_reads_each_ended_run_in_full_once(
    double: WandbDouble,
) -> None:
    """The agent's live progress and ``status --watch`` read the sweep every few seconds.

    A sweep of one page of runs (100) is read whole each time, in one request. Past
    that, what each read fetches in full is the runs that have not ended and those
    that ended since the last read; and each read shows what :meth:`runs` shows.
    """
    backend = WandbBackend()
    sweep_id = backend.create(CONFIG)
    entity, project, _ = sweep_id.split("/")
    watched = backend.watch(sweep_id)

    def end(*run_ids: str) -> None:
        for run_id in run_ids:
            ended = {"complete": True, "exitcode": 0 if run_id[-1] in "13579" else 1}
            post_to_double(double, f"/files/{entity}/{project}/{run_id}/file_stream", ended)

    def pages_of_a_read() -> tuple[list[str], list[str]]:
        """The pages of runs one read of ``watched`` asks for (``full`` or ``ids``), and
        the states of the runs it shows, once they are checked against :meth:`runs`."""
        before = len(double.requests)
        record, runs = watched()
        asked = double.requests[before:]
        assert record == backend.sweep(sweep_id)
        assert runs == backend.runs(sweep_id)
        pages = ["ids" if v["perPage"] == 1000 else "full" for op, v in asked if op == "Runs"]
        return pages, [run.state.value for run in runs]

    end(*_add_runs(double, sweep_id, 60)[2:])
    assert watched()[1] == backend.runs(sweep_id)
    end(*_add_runs(double, sweep_id, 70, first=60)[:-1])  # r0000, r0001, r0129 still run
    pages, states = pages_of_a_read()
    assert pages == ["full"] * 2  # the last read found a page of runs: all of them again
    assert states.count("running") == 3 and len(states) == 130
    assert pages_of_a_read()[0] == ["ids", "full"]  # the 3 that run
    end("r0001")
    _add_runs(double, sweep_id, 2, first=130)
    end("r0131")
    pages, states = pages_of_a_read()
    assert pages == ["ids", "full", "full"]  # and r0001, r0131 that ended since
    assert states[:2] == ["running", "finished"] and states[-3:] == ["running"] * 2 + ["finished"]
