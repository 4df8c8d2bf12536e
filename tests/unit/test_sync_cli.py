"""``wbsweep sync`` refuses bad input in one line, before any upload or login it does not need.

In this process through click's ``CliRunner``; no W&B server is started (the
upload itself is tested end to end in ``tests/e2e/test_wandb_sync.py``).
"""

from __future__ import annotations

from pathlib import Path

from helpers import invoke, sweep_with_results


def one_line(result, code: int, *needles: str) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == code, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return str(lines[0])


def offline_run(root: Path, run_id: str) -> Path:
    """The folder an offline W&B run of ``run_id`` leaves (its log file, as W&B names it)."""
    folder = root / "wandb" / f"offline-run-20260101_120000-{run_id}"
    folder.mkdir(parents=True)
    (folder / f"run-{run_id}.wandb").write_bytes(b"")
    return folder


def test_an_unknown_sweep_names_the_store() -> None:
    one_line(invoke("sync", "nosuch12", "--project", "p"), 4, "nosuch12", "store")


def test_a_wandb_sweep_path_is_not_a_local_sweep() -> None:
    one_line(invoke("sync", "e/p/abc12345", "--project", "p"), 10, "e/p/abc12345", "on W&B")


def test_no_offline_runs_says_where_it_looked(tmp_path: Path) -> None:
    sweep_id, _ = sweep_with_results([0.5, 0.4])
    line = one_line(invoke("sync", sweep_id, "--project", "p"), 10, sweep_id, "--wandb-dir")
    assert "2 ended run(s)" in line and str(tmp_path / "wandb") in line
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    one_line(invoke("sync", sweep_id, "-p", "p", "--wandb-dir", str(elsewhere)), 10, "elsewhere")
    one_line(invoke("sync", sweep_id, "-p", "p", "--wandb-dir", "missing"), 10, "'missing'")


def test_not_logged_in_uploads_nothing(tmp_path: Path) -> None:
    sweep_id, runs = sweep_with_results([0.5])
    folder = offline_run(tmp_path, runs[0]["id"])
    one_line(invoke("sync", sweep_id, "--project", "p"), 7, "not logged in")
    assert not list(folder.glob("*.synced"))
