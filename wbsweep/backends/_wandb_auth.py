"""Which W&B server, which key, and whether the server takes it: before any SDK call.

The server and the key are the ``wandb`` SDK's own answer, so wbsweep goes to
the server ``wandb agent`` would: ``WANDB_BASE_URL``, else the ``base_url`` that
``wandb login --host`` saved in the settings file (``$WANDB_CONFIG_DIR/settings``,
``~/.config/wandb/settings``), else the SDK's default; the key of a
``wandb.login()`` in this process, else ``WANDB_API_KEY``, else the netrc entry
``wandb login`` wrote for that server (``$NETRC``, ``~/.netrc``). ``wandb`` is
imported on the first question only.

A short preflight asks the server who the key belongs to, so an unreachable
server or a rejected key is one clear line instead of the SDK's retries. The
API key is sent to the server only; it never appears in what wbsweep prints,
logs or writes.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wbsweep.errors import UsageError, WandbLoginError, WandbUnreachableError

if TYPE_CHECKING:
    from wandb import Settings

__all__ = [
    "Login",
    "api_key",
    "base_url",
    "child_env",
    "has_credentials",
    "login",
    "not_logged_in_message",
    "preflight",
    "wandb_executable",
]

PREFLIGHT_TIMEOUT = 15.0


@dataclass(frozen=True)
class Login:
    """Where the SDK would connect, and with which key (never shown in a repr)."""

    url: str
    app_url: str
    key: str | None = field(default=None, repr=False)
    #: where the key came from: ``WANDB_API_KEY``, the netrc file's path, ``wandb.login()``
    source: str | None = None

    def describe(self) -> str:
        """``W&B at URL`` and where the key came from (``--backend auto`` says this)."""
        where = f"W&B at {self.url}"
        return f"{where}, key from {self.source}" if self.source else where


def login() -> Login:
    """The server and key as the ``wandb`` SDK resolves them now.

    Raises:
        UsageError: A ``WANDB_*`` setting the SDK rejects (a malformed ``WANDB_BASE_URL``).
        WandbLoginError: A key was found but is not in a form W&B accepts.
    """
    settings = _sdk_settings()
    url = str(settings.base_url).rstrip("/")
    key, source = _sdk_key(settings, url)
    return Login(url=url, app_url=str(settings.app_url).rstrip("/"), key=key, source=source)


def base_url() -> str:
    """The W&B server's API URL, without a trailing slash (see :func:`login`)."""
    return login().url


def api_key() -> str | None:
    """The key ``wandb agent`` would use for :func:`base_url`, or ``None``."""
    return login().key


def has_credentials() -> bool:
    """Whether a key for the configured server exists (``--backend auto`` picks W&B then)."""
    return login().key is not None


def _sdk_settings() -> Settings:
    """This process's loaded SDK settings, else what a fresh ``wandb`` process would load."""
    loaded = _loaded_sdk_settings()
    if loaded is not None:
        return loaded
    from pydantic import ValidationError
    from wandb import Settings

    settings = Settings(silent=True)
    config_dir = os.environ.get("WANDB_CONFIG_DIR")
    folder = Path(config_dir).expanduser() if config_dir else Path.home() / ".config" / "wandb"
    settings.settings_system = str(folder / "settings")
    settings.update_from_system_settings()
    try:
        settings.update_from_env_vars(dict(os.environ))
    except ValidationError as exc:
        problem = exc.errors()[0]
        value = problem.get("input")
        names = [k for k, v in os.environ.items() if k.startswith("WANDB_") and v == value]
        name = names[0] if names else "W&B setting " + ".".join(map(str, problem["loc"]))
        raise UsageError(f"{name}={value!r} is not valid: {problem['msg']}") from None
    return settings


def _loaded_sdk_settings() -> Settings | None:
    """The settings ``wandb`` already loaded here (they hold a ``wandb.login(host=...)``).

    Only while the ``WANDB_*`` environment is what they were loaded from: a
    changed environment means a fresh look, as a new process would take.
    """
    setup = sys.modules.get("wandb.sdk.wandb_setup")
    current = getattr(setup, "_singleton", None)
    if current is None or getattr(current, "_pid", None) != os.getpid():
        return None
    try:
        settings = current.settings_if_loaded
        if settings is None or current.did_environment_change():
            return None
    except AttributeError:  # another SDK layout: look afresh
        return None
    return settings  # type: ignore[no-any-return]


def _sdk_key(settings: Settings, url: str) -> tuple[str | None, str | None]:
    """The key and its source, as ``wandb agent`` finds them (no prompt).

    The SDK takes this process's ``wandb.login()`` first; it names that source
    only when the key is not simply the one the SDK loaded from the system.
    """
    from wandb.sdk.lib import wbauth

    try:
        host = wbauth.HostUrl(url, app_url=settings.app_url)
    except ValueError as exc:
        raise UsageError(f"W&B server {url!r} is not valid: {exc}") from None
    session = wbauth.session_credentials(host=host)
    key, source = _system_key(settings, host, url)
    if isinstance(session, wbauth.AuthApiKey) and (session.api_key != key or source == _SETTINGS):
        return session.api_key, "wandb.login()"
    return key, source


_SETTINGS = "the W&B settings"


def _system_key(settings: Settings, host: Any, url: str) -> tuple[str | None, str | None]:
    """``WANDB_API_KEY``, else the netrc entry for the host, else the settings' key."""
    from wandb.errors import AuthenticationError
    from wandb.sdk.lib import wbauth
    from wandb.sdk.lib.wbauth import wbnetrc

    env_key = os.environ.get("WANDB_API_KEY")
    if env_key:
        return _checked(env_key, "WANDB_API_KEY", url), "WANDB_API_KEY"
    try:
        found = wbnetrc.read_netrc_auth_with_source(host=host)
    except AuthenticationError as exc:
        raise WandbLoginError(f"the netrc key for W&B at {url} is not valid: {exc}") from None
    if found is not None and isinstance(found.auth, wbauth.AuthApiKey):
        return found.auth.api_key, found.source
    if settings.api_key and host.is_same_url(settings.base_url):
        return _checked(settings.api_key, _SETTINGS, url), _SETTINGS
    return None, None


def _checked(key: str, source: str, url: str) -> str:
    from wandb.sdk.lib import wbauth

    problem = wbauth.check_api_key(key)
    if problem:
        raise WandbLoginError(f"the API key in {source} for W&B at {url} is not valid: {problem}")
    return key


def not_logged_in_message(url: str) -> str:
    return (
        f"not logged in to W&B at {url}: run `wandb login` (`wandb login --host URL` for "
        "W&B Server) or set WANDB_API_KEY, or use --backend local"
    )


def preflight(url: str, key: str | None) -> dict[str, Any]:
    """Ask the server who ``key`` belongs to; ``{"entity", "username"}``.

    Raises:
        WandbLoginError: No key, or the server rejected it.
        WandbUnreachableError: The server did not answer, or answered an HTTP error.
    """
    if not key:
        raise WandbLoginError(not_logged_in_message(url))
    body = json.dumps({"query": "query Viewer { viewer { id entity username } }"}).encode()
    token = base64.b64encode(f"api:{key}".encode()).decode()
    request = urllib.request.Request(
        f"{url}/graphql",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=PREFLIGHT_TIMEOUT) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise WandbLoginError(
                f"W&B at {url} rejected the API key: run `wandb login --relogin` or set "
                "WANDB_API_KEY, or use --backend local"
            ) from None
        raise WandbUnreachableError(f"W&B at {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WandbUnreachableError(
            f"cannot reach W&B at {url}: {reason} (check WANDB_BASE_URL and the network, "
            "or use --backend local)"
        ) from None
    viewer = (answer.get("data") or {}).get("viewer")
    if not viewer:
        raise WandbLoginError(not_logged_in_message(url))
    return {"entity": viewer.get("entity"), "username": viewer.get("username")}


def wandb_executable() -> str:
    """The ``wandb`` CLI of this install (beside the interpreter), else the one on PATH."""
    beside = Path(sys.executable).parent / "wandb"
    return str(beside) if beside.exists() else "wandb"


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """An environment for a ``wandb`` child: without this process's ``wandb-core`` address."""
    return {k: v for k, v in env.items() if k != "WANDB_SERVICE"}
