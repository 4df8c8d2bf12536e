"""The trial entry point's own parts: the params file and the run id every rank agrees on.

The real launches of ``wbsweep.trial`` are in ``tests/e2e/test_trial_launch.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from wbsweep import trial
from wbsweep.errors import TrialError


def test_params_file_errors(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "bad.json").write_text("{")
    for name, match in [
        ("missing.json", "cannot read"),
        ("list.json", "JSON object"),
        ("bad.json", "not JSON"),
    ]:
        with pytest.raises(TrialError, match=match):
            trial.read_params(tmp_path / name)


def test_run_id_falls_back_to_one_every_rank_derives_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "params.json"
    path.write_text("{}")
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    derived = trial._params_run_id(str(path))
    assert derived == trial._params_run_id(str(path)) and len(derived) == 8
    monkeypatch.setenv("WANDB_RUN_ID", "given1")
    assert trial._params_run_id(str(path)) == "given1"
