"""The W&B backend's pure parts: sweep paths, where the key comes from, W&B's records."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from wbsweep.backends import choose_backend
from wbsweep.backends._wandb_records import run_record, summary_number, sweep_state
from wbsweep.backends.base import RunState, SweepRecord, SweepState
from wbsweep.backends.wandb import SweepPath, api_key, has_credentials, sweep_page_url
from wbsweep.errors import EXIT_FAILED, UsageError, WbsweepError


def test_sweep_path_parses_only_entity_project_id() -> None:
    assert str(SweepPath.parse("team/proj/abc123")) == "team/proj/abc123"
    for bad in ("abc123", "proj/abc123", "a/b/c/d", "a//c"):
        with pytest.raises(WbsweepError, match="entity/project/sweep_id") as raised:
            SweepPath.parse(bad)
        assert raised.value.exit_code == EXIT_FAILED


def test_sweep_url_for_cloud_and_server() -> None:
    path = SweepPath("team", "proj", "abc")
    assert sweep_page_url(path, "https://wandb.ai") == "https://wandb.ai/team/proj/sweeps/abc"
    assert (
        sweep_page_url(path, "http://wb.local:8080") == "http://wb.local:8080/team/proj/sweeps/abc"
    )


def test_key_from_env_then_netrc_for_the_server_host_and_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # netrc names the server as the SDK writes it: host and port.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine wb.local:8080\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("WANDB_BASE_URL", "http://wb.local:8080")
    assert api_key() == "k" * 40
    monkeypatch.setenv("WANDB_API_KEY", "e" * 40)
    assert api_key() == "e" * 40
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_BASE_URL", "https://api.wandb.ai")
    assert api_key() is None
    monkeypatch.setenv("NETRC", str(tmp_path / "missing"))
    assert not has_credentials()


def test_auto_backend_follows_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NETRC", str(tmp_path / "missing"))
    assert choose_backend("auto") == "local"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert choose_backend(None) == "wandb"
    monkeypatch.setenv("WBSWEEP_BACKEND", "local")
    assert choose_backend(None) == "local"
    with pytest.raises(UsageError, match="nope"):
        choose_backend("nope")


def test_summary_numbers_including_define_metric_summaries() -> None:
    assert summary_number(0.5, "minimize") == 0.5
    assert summary_number({"min": 0.2, "last": 0.4}, "minimize") == 0.2
    assert summary_number({"max": 0.9, "last": 0.4}, "maximize") == 0.9
    assert summary_number({"last": 0.4}, "maximize") == 0.4
    assert summary_number("0.3", "minimize") is None
    assert summary_number(True, "minimize") is None


def test_sweep_states_in_wbsweep_s_words() -> None:
    assert sweep_state("running") is SweepState.RUNNING
    assert sweep_state("PENDING") is SweepState.RUNNING
    assert sweep_state("CANCELED") is SweepState.CANCELED
    assert sweep_state("SOMETHING_NEW") is SweepState.FINISHED


def test_a_w_and_b_run_as_a_run_record() -> None:
    sweep = SweepRecord(
        "e/p/s",
        {"metric": {"name": "loss", "goal": "minimize"}, "parameters": {"lr": {}}},
        SweepState.RUNNING,
    )
    run = SimpleNamespace(
        id="r1",
        state="killed",
        config={"lr": 0.1, "_wandb": {"x": 1}, "seed": 3},
        summary_metrics='{"loss": {"min": 0.2, "last": 0.3}, "acc": 0.9, "_step": 4, "ok": true}',
        created_at="2026-01-02T03:04:05Z",
        heartbeat_at="2026-01-02T03:05:05",
    )
    record = run_record(run, sweep)
    assert (record.id, record.sweep_id, record.state) == ("r1", "e/p/s", RunState.STOPPED)
    assert record.params == {"lr": 0.1}
    assert record.objective == 0.2
    assert record.metrics == {"acc": 0.9}
    assert record.finished_at is not None and record.finished_at - record.created_at == 60
    running = run_record(SimpleNamespace(**{**vars(run), "state": "running"}), sweep)
    assert running.state is RunState.RUNNING and running.finished_at is None
    assert running.heartbeat_at == record.finished_at
