"""The W&B backend's pure parts: sweep paths, where the key comes from, summaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from wbsweep.backends import choose_backend
from wbsweep.backends.wandb import SweepPath, _number, api_key, has_credentials, sweep_url
from wbsweep.errors import WbsweepError


def test_sweep_path_parses_only_entity_project_id() -> None:
    assert str(SweepPath.parse("team/proj/abc123")) == "team/proj/abc123"
    for bad in ("abc123", "proj/abc123", "a/b/c/d", "a//c"):
        with pytest.raises(WbsweepError, match="entity/project/sweep_id"):
            SweepPath.parse(bad)


def test_sweep_url_for_cloud_and_server() -> None:
    path = SweepPath("team", "proj", "abc")
    assert sweep_url(path, "https://api.wandb.ai") == "https://wandb.ai/team/proj/sweeps/abc"
    assert sweep_url(path, "http://wb.local:8080") == "http://wb.local:8080/team/proj/sweeps/abc"


def test_key_from_env_then_netrc_for_the_server_host(tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine wb.local\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    env = {"WANDB_BASE_URL": "http://wb.local:8080", "NETRC": str(netrc)}
    assert api_key(env) == "k" * 40
    assert api_key({**env, "WANDB_API_KEY": "e" * 40}) == "e" * 40
    assert api_key({**env, "WANDB_BASE_URL": "https://api.wandb.ai"}) is None
    assert not has_credentials({"NETRC": str(tmp_path / "missing")})


def test_auto_backend_follows_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NETRC", str(tmp_path / "missing"))
    assert choose_backend("auto") == "local"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert choose_backend(None) == "wandb"
    monkeypatch.setenv("WBSWEEP_BACKEND", "local")
    assert choose_backend(None) == "local"
    with pytest.raises(WbsweepError, match="nope"):
        choose_backend("nope")


def test_summary_numbers_including_define_metric_summaries() -> None:
    assert _number(0.5, "minimize") == 0.5
    assert _number({"min": 0.2, "last": 0.4}, "minimize") == 0.2
    assert _number({"max": 0.9, "last": 0.4}, "maximize") == 0.9
    assert _number({"last": 0.4}, "maximize") == 0.4
    assert _number("0.3", "minimize") is None
    assert _number(True, "minimize") is None
