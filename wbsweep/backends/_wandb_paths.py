"""Where a W&B sweep lives and how its errors read: ``entity/project/id``, one-line errors.

>>> str(SweepPath.parse("e/p/abc")), sweep_page_url(SweepPath("e", "p", "abc"), "https://wandb.ai")
('e/p/abc', 'https://wandb.ai/e/p/sweeps/abc')
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from wbsweep.backends._wandb_auth import api_key, base_url, login, not_logged_in_message
from wbsweep.errors import SweepNotFoundError, WandbLoginError, WbsweepError

__all__ = ["SweepPath", "sdk_error", "sweep_not_found", "sweep_page_url"]


@dataclass(frozen=True)
class SweepPath:
    """``entity/project/id``: where a W&B sweep lives."""

    entity: str
    project: str
    id: str

    def __str__(self) -> str:
        return f"{self.entity}/{self.project}/{self.id}"

    @classmethod
    def parse(cls, text: str) -> SweepPath:
        """``SweepPath`` of ``entity/project/id``; ``WbsweepError`` for any other shape."""
        parts = text.strip("/").split("/")
        if len(parts) != 3 or not all(parts):
            # Exit 1, as before UsageError existed: scripts check for it.
            raise WbsweepError(f"W&B sweep path {text!r} is not entity/project/sweep_id")
        return cls(*parts)


def sweep_not_found(path: SweepPath) -> SweepNotFoundError:
    return SweepNotFoundError(
        f"no W&B sweep {path.id!r} in {path.entity}/{path.project} "
        "(check the entity, project and sweep id)"
    )


def sdk_error(exc: Exception, where: str, *, not_found: bool = False) -> WbsweepError:
    """One line for an SDK failure; never the key, never a traceback."""
    if isinstance(exc, WbsweepError):
        return exc
    text = " ".join(str(exc).split()) or type(exc).__name__
    lowered = text.lower()
    if "not logged in" in lowered or "credentials" in lowered or "api key" in lowered:
        return WandbLoginError(not_logged_in_message(base_url()))
    if not_found and ("not found" in lowered or "could not find" in lowered or "404" in lowered):
        with contextlib.suppress(WbsweepError):
            return sweep_not_found(SweepPath.parse(where))
    key = api_key()
    if key:
        text = text.replace(key, "***")
    return WbsweepError(f"W&B error for {where}: {text}")


def sweep_page_url(path: SweepPath, app_url: str | None = None) -> str:
    """The sweep's page on the W&B app (``app_url``: the SDK's app URL for the server)."""
    app = (app_url or login().app_url).rstrip("/")
    return f"{app}/{path.entity}/{path.project}/sweeps/{path.id}"
