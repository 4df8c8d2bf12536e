"""Which W&B server, which key, and whether the server takes it: before any SDK call.

A short preflight asks the server who the key belongs to, so an unreachable
server or a rejected key is one clear line instead of the SDK's retries. The
API key is sent to the server only; it never appears in what wbsweep prints,
logs or writes.
"""

from __future__ import annotations

import base64
import json
import netrc
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wbsweep.errors import WandbLoginError, WandbUnreachableError

__all__ = [
    "DEFAULT_BASE_URL",
    "api_key",
    "base_url",
    "child_env",
    "has_credentials",
    "not_logged_in_message",
    "preflight",
    "wandb_executable",
]

DEFAULT_BASE_URL = "https://api.wandb.ai"
PREFLIGHT_TIMEOUT = 15.0


def base_url(env: Mapping[str, str] | None = None) -> str:
    """``WANDB_BASE_URL`` without a trailing slash, else W&B cloud's API."""
    source: Mapping[str, str] = os.environ if env is None else env
    return (source.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def api_key(env: Mapping[str, str] | None = None) -> str | None:
    """The key the SDK would use: ``WANDB_API_KEY``, else ``wandb login``'s netrc entry."""
    source: Mapping[str, str] = os.environ if env is None else env
    if source.get("WANDB_API_KEY"):
        return source["WANDB_API_KEY"]
    host = urllib.parse.urlparse(base_url(source)).hostname or ""
    path = source.get("NETRC") or str(Path.home() / ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return entry[2] if entry and entry[2] else None


def has_credentials(env: Mapping[str, str] | None = None) -> bool:
    """Whether a key for the configured server exists (``--backend auto`` picks W&B then)."""
    return api_key(env) is not None


def not_logged_in_message(url: str) -> str:
    return (
        f"not logged in to W&B at {url}: run `wandb login` or set WANDB_API_KEY "
        "(WANDB_BASE_URL for W&B Server), or use --backend local"
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
