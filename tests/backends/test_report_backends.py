"""``Backend.run_history`` and ``wbsweep report`` on every backend (W&B: the test double).

The report reads only through the backend contract, so the same sweep gives
the same page on either backend: these tests build one through each backend's
own way of recording runs and check what the page shows.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke

from wbsweep.backends.base import Backend
from wbsweep.errors import EXIT_NOT_FOUND, WbsweepError
from wbsweep.report import write_report

AddRun = Callable[..., str]


def _history(a: int, steps: int = 3) -> list[dict[str, Any]]:
    """What a trial with param ``a`` logs: the objective falling to ``(a - 3) ** 2``."""
    final = float((a - 3) ** 2)
    return [
        {"_step": 10 * s, "objective": final + (steps - s), "eval_loss": final + 1.0}
        for s in range(1, steps + 1)
    ]


def test_run_history_is_what_each_run_reported(
    backend: Backend, add_run: AddRun, sweep_config: dict[str, Any]
) -> None:
    sweep_id = backend.create(sweep_config)
    logged = add_run(sweep_id, "finished", 4.0, history=_history(1))
    silent = add_run(sweep_id, "finished", 1.0)

    rows = backend.run_history(sweep_id, logged)
    assert rows is not None
    assert [r["_step"] for r in rows] == [10, 20, 30]
    assert [r["objective"] for r in rows] == [6.0, 5.0, 4.0]
    assert all(r["eval_loss"] == 5.0 for r in rows)
    assert backend.run_history(sweep_id, silent) == []


def test_run_history_of_an_unknown_run_is_a_one_line_error(
    backend: Backend, sweep_config: dict[str, Any]
) -> None:
    sweep_id = backend.create(sweep_config)
    with pytest.raises(WbsweepError) as raised:
        backend.run_history(sweep_id, "nosuchrun")
    assert "nosuchrun" in str(raised.value) and "\n" not in str(raised.value)


def test_the_report_shows_every_run_its_curves_and_the_best(
    backend: Backend, add_run: AddRun, sweep_config: dict[str, Any], tmp_path: Path
) -> None:
    sweep_id = backend.create(sweep_config)
    # The grid hands out a = 1, 2, 3, ...: the objective (a - 3)^2 is best at a = 3.
    ids = [
        add_run(sweep_id, "finished", float((a - 3) ** 2), history=_history(a))
        for a in (1, 2, 3, 4, 5)
    ]
    failed = add_run(sweep_id, "failed", None)

    done = write_report(backend, sweep_id, tmp_path / "report.html")

    page = done.html.read_text()
    assert (done.runs, done.scored) == (6, 5)
    assert re.findall(r'<tr class="run[^"]*" data-run="([^"]+)"', page) == [*ids, failed]
    assert re.findall(r'<tr class="run best" data-run="([^"]+)"', page) == [ids[2]]
    # One curve per run that logged the metric, in each of the two metric charts.
    charts = page.split('<svg class="plot curves"')[1:]
    assert len(charts) == 2
    for chart in charts:
        assert sorted(re.findall(r'<g class="curve[^"]*" data-run="([^"]+)"', chart)) == sorted(ids)
    assert f"No history was reported by run(s) {failed}" in page
    # a decides the objective; b is the same in every run.
    importance = re.findall(r'<tr class="importance" data-param="([^"]+)"', page)
    assert importance[0] == "a"
    assert re.findall(r'<g class="pc-axis" data-param="([^"]+)"', page) == ["a", "objective"]


def test_the_command_reports_a_sweep_of_either_backend(
    backend: Backend, add_run: AddRun, sweep_config: dict[str, Any], tmp_path: Path
) -> None:
    sweep_id = backend.create(sweep_config)
    ids = [add_run(sweep_id, "finished", float(a), history=_history(a)) for a in (1, 2, 3, 4)]

    # The local supplier's store (tests/backends/conftest.py); a W&B sweep path ignores it.
    store = tmp_path / "contract" / "store.db"
    result = invoke("report", sweep_id, "--store", str(store), "-o", "r.html", "--png", "png")

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == "Wrote r.html (4 runs, 4 with an objective)."
    page = Path("r.html").read_text()
    assert re.findall(r'<tr class="run[^"]*" data-run="([^"]+)"', page) == ids
    assert (Path("png") / "curves-objective.png").read_bytes().startswith(b"\x89PNG")


def test_an_unknown_sweep_is_one_line_and_writes_nothing(
    backend: Backend, missing_sweep_id: str, tmp_path: Path
) -> None:
    store = tmp_path / "contract" / "store.db"
    result = invoke("report", missing_sweep_id, "--store", str(store), "-o", "r.html")

    assert result.exit_code == EXIT_NOT_FOUND
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and "nosuchid" in line
    assert not Path("r.html").exists()
