"""``wbsweep report``: the plot data, the page, and the command's errors (no browser).

Sweeps are built through the local backend's own run queue (no training): the
runs, their params and their histories are what a trial would have recorded.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest
from helpers import invoke, local_report_sweep

from wbsweep.backends.base import RunEnd, RunRecord, RunState, SweepRecord, SweepState
from wbsweep.backends.local import LocalBackend
from wbsweep.errors import EXIT_BAD_INPUT, EXIT_NOT_FOUND
from wbsweep.report import collect, render_html
from wbsweep.report.data import (
    SweepReport,
    curves,
    history_metrics,
    parallel_axes,
    parallel_lines,
    param_importance,
    trial_points,
)


def _run(
    run_id: str, objective: float | None, state: RunState = RunState.FINISHED, **params: object
) -> RunRecord:
    return RunRecord(run_id, "s", state, dict(params), objective=objective)


def _report(runs: list[RunRecord], goal: str = "minimize", **parameters: object) -> SweepReport:
    config = {
        "method": "random",
        "metric": {"name": "loss", "goal": goal},
        "parameters": parameters,
    }
    return SweepReport(SweepRecord("s", config, SweepState.RUNNING), runs)


# -- plot data -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("goal", "best_so_far"),
    [("minimize", [0.5, 0.5, 0.5, 0.2, 0.2]), ("maximize", [0.5, 0.5, 0.7, 0.7, 0.9])],
)
def test_best_so_far_follows_the_goal_over_finished_runs_only(
    goal: str, best_so_far: list[float]
) -> None:
    runs = [
        _run("a", 0.5),
        _run("b", None, RunState.FAILED),  # no objective: no point, its trial number kept
        _run("c", 0.1 if goal == "minimize" else 0.95, RunState.STOPPED),  # stopped early
        _run("d", 0.7),
        _run("e", 0.2),
        _run("f", 0.9),
    ]
    points = trial_points(runs, goal)
    assert [(p.trial, p.run_id) for p in points] == [
        (1, "a"),
        (3, "c"),
        (4, "d"),
        (5, "e"),
        (6, "f"),
    ]
    assert [p.best_so_far for p in points] == best_so_far
    assert [p.finished for p in points] == [True, False, True, True, True]


def test_parallel_coordinates_have_an_axis_per_varied_param_then_the_objective() -> None:
    report = _report(
        [
            _run("a", 1.0, lr=1e-5, optim="sgd", seed=1),
            _run("b", 2.0, lr=1e-3, optim="adamw", seed=1),
            _run("c", 3.0, lr=1e-1, optim="sgd", seed=1),
        ],
        lr={"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
        optim={"values": ["sgd", "adamw"]},
        seed={"value": 1},
    )
    axes = parallel_axes(report)
    assert [(a.name, a.kind) for a in axes] == [
        ("lr", "log"),
        ("optim", "categorical"),
        ("loss", "linear"),
    ]
    lines = parallel_lines(report, axes)
    # On a log axis 1e-3 is halfway between 1e-5 and 1e-1; categories spread over the axis.
    assert lines["b"] == pytest.approx([0.5, 1.0, 0.5])
    assert lines["a"] == pytest.approx([0.0, 0.0, 0.0])
    assert lines["c"] == pytest.approx([1.0, 0.0, 1.0])


def test_a_param_the_run_did_not_use_leaves_its_axis_out_of_that_line() -> None:
    unused = RunRecord(
        "b", "s", RunState.FINISHED, {"optim": "sgd", "momentum": 0.9}, objective=2.0,
        ran_as={"unused_params": ["momentum"]},
    )  # fmt: skip
    report = _report(
        [
            _run("a", 1.0, optim="adamw", momentum=0.5),
            unused,
            _run("c", 3.0, optim="sgd", momentum=0.1),
        ],
        optim={"values": ["adamw", "sgd"]},
        momentum={"min": 0.0, "max": 1.0},
    )
    axes = parallel_axes(report)
    assert [a.name for a in axes] == ["optim", "momentum", "loss"]
    assert parallel_lines(report, axes)["b"][1] is None


def test_importance_ranks_the_deciding_parameter_first() -> None:
    runs = [
        _run(f"r{i}", abs(math.log10(lr) + 3), lr=lr, optim=("sgd", "adamw")[i % 2])
        for i, lr in enumerate([1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
    ]
    found = param_importance(_report(runs))
    assert [row.name for row in found] == ["lr", "optim"]
    assert found[0].importance.score > 0.5 > found[1].importance.score  # type: ignore[operator]


def test_curves_one_per_run_that_logged_the_metric_sweep_metric_first() -> None:
    runs = [_run("a", 1.0), _run("b", 2.0), _run("c", None, RunState.FAILED)]
    report = SweepReport(
        _report(runs).sweep,
        runs,
        {
            "a": [
                {"_step": 20, "loss": 1.5, "eval_acc": 0.5},
                {"_step": 10, "loss": 2.0, "eval_acc": 0.4},
            ],
            "b": [{"_step": 10, "loss": 3.0, "eval_runtime": 1.2, "train/lr": 0.1}],
            "c": [],
        },
    )
    assert history_metrics(report) == ["loss", "eval_acc"]
    loss = curves(report, "loss")
    assert [(c.run_id, c.steps, c.values) for c in loss] == [
        ("a", (10.0, 20.0), (2.0, 1.5)),
        ("b", (10.0,), (3.0,)),
    ]
    assert [c.run_id for c in curves(report, "eval_acc")] == ["a"]


# -- the page ------------------------------------------------------------------------------


def test_the_page_is_self_contained_and_marks_the_best_run(tmp_path: Path) -> None:
    sweep_id, made = local_report_sweep(tmp_path / "s.db", 6)
    page = render_html(collect(LocalBackend(tmp_path / "s.db"), sweep_id))

    best = min(made, key=lambda r: r["objective"])["id"]
    assert re.findall(r'<tr class="run[^"]*" data-run="([^"]+)"', page) == [r["id"] for r in made]
    assert re.findall(r'<tr class="run best" data-run="([^"]+)"', page) == [best]
    assert f'id="best-run">{best}<' in page
    assert len(re.findall(r'<circle class="trial', page)) == 6
    assert len(re.findall(r'<g class="curve', page)) == 12  # objective and eval_loss, 6 runs each
    # Nothing to fetch: no script, no external reference, and a policy that forbids fetches.
    assert "<script" not in page
    assert not re.search(r"(src|href)=", page)
    assert "default-src 'none'" in page
    assert "leave-one-out" in page  # the importance method is said on the page


def test_user_text_is_escaped(tmp_path: Path) -> None:
    runs = [_run("a", 1.0, tag="<b>bold</b>"), _run("b", 2.0, tag="x&y")]
    page = render_html(_report(runs))
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page


def test_a_sweep_with_no_finished_run_gets_a_page_that_says_so(tmp_path: Path) -> None:
    sweep_id, _ = local_report_sweep(tmp_path / "s.db", 0)
    backend = LocalBackend(tmp_path / "s.db")
    run = backend.claim_next(sweep_id, "w")
    assert run is not None
    backend.finish_run(run.id, RunEnd(1, reason="boom"))

    result = invoke("report", sweep_id, "--store", str(tmp_path / "s.db"), "-o", "r.html")

    assert result.exit_code == 0, result.stderr
    assert "No run has a finite objective yet" in result.stderr
    page = Path("r.html").read_text()
    assert 'id="no-results"' in page and "1 failed" in page
    assert '<tr class="run" data-run="' in page
    assert "<svg" not in page


# -- the command ---------------------------------------------------------------------------


def test_report_writes_the_page_and_says_where(tmp_path: Path) -> None:
    sweep_id, made = local_report_sweep(tmp_path / "s.db", 4)

    result = invoke("report", sweep_id, "--store", str(tmp_path / "s.db"), "-o", "out/r.html")
    assert result.exit_code == EXIT_BAD_INPUT
    assert result.stderr.strip() == "Error: cannot write -o 'out/r.html': no directory 'out'"

    os.mkdir("out")
    result = invoke("report", sweep_id, "--store", str(tmp_path / "s.db"), "-o", "out/r.html")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "Wrote out/r.html (4 runs, 4 with an objective)."
    assert all(r["id"] in Path("out/r.html").read_text() for r in made)
    assert os.listdir("out") == ["r.html"]  # no temporary file left beside it


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["nosuch"], EXIT_NOT_FOUND, "nosuch"),
        (["SWEEP", "-o", "."], EXIT_BAD_INPUT, "-o '.' is a directory; give a file name"),
        (
            ["SWEEP", "-o", "ro/r.html"],
            EXIT_BAD_INPUT,
            "cannot write -o 'ro/r.html': permission denied",
        ),
        (["SWEEP", "-o", "x" * 300], EXIT_BAD_INPUT, "file name too long"),
        (["SWEEP", "--png", "afile"], EXIT_BAD_INPUT, "--png 'afile' is a file, not a directory"),
        (
            ["SWEEP", "--png", "no/pngs"],
            EXIT_BAD_INPUT,
            "cannot write --png 'no/pngs': no directory 'no'",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    sweep_id, _ = local_report_sweep(tmp_path / "s.db", 2)
    Path("afile").write_text("keep")
    os.mkdir("ro", 0o555)
    if "ro/r.html" in args and os.access("ro", os.W_OK):
        pytest.skip("running as a user who can write a read-only directory (root)")
    before = sorted(os.listdir("."))

    argv = [sweep_id if a == "SWEEP" else a for a in args]
    result = invoke("report", *argv, "--store", str(tmp_path / "s.db"))

    assert result.exit_code == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert sorted(os.listdir(".")) == before and not Path("report.html").exists()
    assert Path("afile").read_text() == "keep"
