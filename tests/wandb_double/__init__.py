"""A W&B server test double for the real, unmodified wandb SDK (test-only, never shipped).

Use in a test module or ``conftest.py``::

    from wandb_double import WandbDouble, wandb_double  # noqa: F401  (the fixture)

    def test_something(wandb_double: WandbDouble) -> None:
        sweep_id = wandb.sweep(config, project="p")      # env already points here
        subprocess.run(["wandb", "agent", "--count", "1", f"{wandb_double.entity}/p/{sweep_id}"],
                       env={**os.environ}, check=True)
        assert wandb_double.runs(sweep_id)[0]["state"] == "finished"

The fixture starts a :class:`WandbDouble`, sets :meth:`WandbDouble.env` in
``os.environ`` with ``monkeypatch`` (so child processes inherit it), resets the
SDK's in-process singletons so the new base URL is read, and stops the server
afterwards.  Outside pytest use ``with WandbDouble() as double:`` and pass
``{**os.environ, **double.env()}`` to subprocesses.

Speed: ``wandb agent`` waits ``Agent.POLL_INTERVAL`` (5 s, no environment
variable changes it) before each heartbeat, so the first run starts about 5 s
after the agent registers and each further run adds up to 5 s.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._double import STOPPED_STATES, WandbDouble
from ._graphql import GraphQLError

__all__ = ["STOPPED_STATES", "GraphQLError", "WandbDouble", "reset_wandb", "wandb_double"]


def reset_wandb() -> None:
    """Forget the wandb SDK's process-wide state (settings, service, login).

    ``wandb`` caches its settings and its ``wandb-core`` service per process; a
    test that changes ``WANDB_BASE_URL`` must drop them or the SDK keeps talking
    to the previous server.
    """
    import wandb

    wandb.teardown()


@pytest.fixture
def wandb_double(monkeypatch: pytest.MonkeyPatch) -> Iterator[WandbDouble]:
    """A started :class:`WandbDouble` with the SDK's environment pointing at it."""
    double = WandbDouble().start()
    try:
        for key, value in double.env().items():
            monkeypatch.setenv(key, value)
        reset_wandb()
        yield double
    finally:
        reset_wandb()
        double.stop()
