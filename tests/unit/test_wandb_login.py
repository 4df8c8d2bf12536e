"""W&B settings as the SDK sees them: `wandb login --host`, WANDB_BASE_URL, netrc, no login.

The saved host and key are written by the real ``wandb login --host URL KEY``
command against the W&B protocol test double (``tests/wandb_double``), so the
settings file and the netrc entry are the SDK's own. ``tests/conftest.py``
points ``NETRC`` and ``WANDB_CONFIG_DIR`` into each test's ``tmp_path``: a
developer's own login never reaches these tests.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import SWEEPS, invoke
from wandb_double import WandbDouble, reset_wandb

from wbsweep.backends import backend_for_sweep, choose_backend
from wbsweep.backends._wandb_auth import login
from wbsweep.backends.wandb import WandbBackend, api_key, wandb_executable
from wbsweep.errors import EXIT_BAD_INPUT, EXIT_LOGIN

CONFIG: dict[str, Any] = {
    "method": "grid",
    "metric": {"name": "objective", "goal": "minimize"},
    "parameters": {"a": {"values": [1, 2]}},
}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[WandbDouble]:
    """A W&B server double that nothing points at yet: no WANDB_BASE_URL, no key."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with WandbDouble() as double:
        yield double
    reset_wandb()


def wandb_login_host(double: WandbDouble) -> None:
    """The real ``wandb login --host URL KEY``, as a user types it."""
    done = subprocess.run(
        [wandb_executable(), "login", "--host", double.base_url, double.api_key],
        env={**os.environ, "WANDB_MODE": "online"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_a_host_saved_by_wandb_login_is_where_auto_goes(
    server: WandbDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert choose_backend("auto") == "local"
    wandb_login_host(server)
    # The SDK saved the host in its settings file and the key in netrc, nowhere in the env.
    assert server.base_url in (tmp_path / ".config" / "wandb" / "settings").read_text()
    assert server.api_key in (tmp_path / ".netrc").read_text()
    assert "WANDB_BASE_URL" not in os.environ and "WANDB_API_KEY" not in os.environ

    assert choose_backend("auto") == "wandb"
    found = login()
    assert (found.url, found.key, found.source) == (
        server.base_url,
        server.api_key,
        str(tmp_path / ".netrc"),
    )
    assert server.api_key not in repr(found)

    monkeypatch.setenv("WANDB_MODE", "online")
    result = invoke("create", str(SWEEPS / "tiny.py"), "--project", "proj", "--n-trials", "2")
    assert result.exit_code == 0, result.stderr
    assert (
        f"Backend: wandb (auto: logged in to W&B at {server.base_url}, "
        f"key from {tmp_path / '.netrc'})." in result.stdout
    )
    assert f"in W&B at {server.base_url}." in result.stdout
    assert len(server.sweeps()) == 1
    assert server.api_key not in result.stdout + result.stderr


def test_wandb_base_url_outranks_the_saved_host(
    server: WandbDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb_login_host(server)
    # As the SDK: WANDB_BASE_URL wins, and the netrc key is for the other host only.
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    assert login().url == "http://127.0.0.1:9"
    assert api_key() is None
    assert choose_backend("auto") == "local"
    result = invoke("create", str(SWEEPS / "tiny.py"), "--n-trials", "1")
    assert result.exit_code == 0, result.stderr
    assert "Backend: local (auto: no W&B login for http://127.0.0.1:9)." in result.stdout


def test_no_login_anywhere_is_local_and_says_which_server_it_looked_for() -> None:
    assert choose_backend("auto") == "local"
    assert api_key() is None
    result = invoke("create", str(SWEEPS / "tiny.py"), "--n-trials", "1")
    assert result.exit_code == 0, result.stderr
    assert f"Backend: local (auto: no W&B login for {login().url})." in result.stdout


@pytest.mark.parametrize(
    ("env", "exit_code", "message"),
    [
        ({"WANDB_BASE_URL": "not a url"}, EXIT_BAD_INPUT, "WANDB_BASE_URL='not a url' is not"),
        ({"WANDB_API_KEY": "short"}, EXIT_LOGIN, "the API key in WANDB_API_KEY for W&B at"),
    ],
)
def test_a_setting_the_sdk_rejects_is_one_line(
    env: dict[str, str], exit_code: int, message: str
) -> None:
    result = invoke("create", str(SWEEPS / "tiny.py"), "--n-trials", "1", **env)
    assert result.exit_code == exit_code
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and "short" not in result.stderr


def test_a_bare_id_with_wandb_entity_and_project_is_that_w_and_b_sweep(
    wandb_double: WandbDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A team entity other than the viewer's own: WANDB_ENTITY must be what decides.
    path = WandbBackend(entity="team-x", project="proj").create(CONFIG)
    assert path.startswith("team-x/proj/")
    bare = path.rsplit("/", 1)[-1]
    monkeypatch.setenv("WANDB_ENTITY", "team-x")
    monkeypatch.setenv("WANDB_PROJECT", "proj")
    backend, resolved = backend_for_sweep(bare)
    assert resolved == path
    assert backend.sweep(resolved).id == path


def test_wandb_setup_in_this_process_is_what_the_plugin_uses(server: WandbDouble) -> None:
    # A notebook's `wandb.setup(...)` (or `wandb.login(host=..., key=...)`) before
    # `hyperparameter_search`: no environment, no file, and yet W&B is configured.
    import wandb

    assert choose_backend("auto") == "local"
    wandb.setup(wandb.Settings(base_url=server.base_url, api_key=server.api_key))
    found = login()
    assert (found.url, found.key, found.source) == (
        server.base_url,
        server.api_key,
        "wandb.login()",
    )
    assert choose_backend("auto") == "wandb"
    assert not (Path(os.environ["NETRC"])).exists()
