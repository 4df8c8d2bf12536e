"""A W&B server test double for the real, unmodified wandb SDK (test-only, never shipped).

Use in a test module or ``conftest.py``::

    from wandb_double import WandbDouble, wandb_double  # noqa: F401  (the fixture)

    def test_something(wandb_double: WandbDouble) -> None:
        sweep_id = wandb.sweep(config, project="p")      # env already points here
        subprocess.run(["wandb", "agent", "--count", "1", f"{wandb_double.entity}/p/{sweep_id}"],
                       env=wandb_double.child_env(), check=True)
        assert wandb_double.runs(sweep_id)[0]["state"] == "finished"

The fixture starts a :class:`WandbDouble`, sets :meth:`WandbDouble.env` in
``os.environ`` with ``monkeypatch`` (so child processes inherit it), resets the
SDK's in-process singletons so the new base URL is read, and stops the server
afterwards.  Outside pytest use ``with WandbDouble() as double:``.  Give
subprocesses ``double.child_env(extra)``: it is ``os.environ`` + ``env()``
without ``WANDB_SERVICE``, which the SDK sets in-process after any wandb call
and which would make a child share this process's ``wandb-core``.

Public API (``WandbDouble``): ``start()``/``stop()``/context manager;
``base_url``, ``port``, ``api_key``, ``entity``; ``env()`` and ``child_env()``;
reads ``sweeps()``, ``sweep(id)``, ``runs(sweep_id=None)``, ``run(id)``,
``agents()``; control ``stop_run(run_id)``, ``set_sweep_state(id, state)``;
waiting ``wait_for(predicate)``, ``wait_for_run(states=..., sweep_id=...)``;
records ``requests`` (label, variables), ``operations()``, ``commands`` (what
heartbeats answered), ``api_keys_seen``, ``unknown`` (ops/fields it could not
answer) and ``errors`` (its own failures).  ``WANDB_DOUBLE_LOG=path`` logs
every request as a JSON line, query text included.

Speed: the SDK's sweep agents wait 5 s between heartbeats (``wandb agent``'s
``Agent.POLL_INTERVAL``, the in-process ``wandb.agent``'s
``HEARTBEAT_SLEEP_SECONDS``: class constants no environment variable changes).
Under the fixture both wait 1 s instead, in this process and in every child:
``env()``'s lean settings put ``fast_agent/sitecustomize.py`` on ``PYTHONPATH``,
which sets those two constants as their modules load and changes nothing else.
A run then starts about 1 s after the agent registers, the next one about 1 s
after the previous ends, and ``wandb agent --count N`` exits at the poll after
the N-th run ends.  Budget about 1-2 s per trial plus 2-3 s for the CLI start.
(The in-process agent still waits up to 10 s at its end: two fixed 5 s waits.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._double import STOPPED_STATES, WandbDouble
from ._fast_agent import AGENT_POLL
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
        # This process's in-process agent polls as fast as its children's (fast_agent/).
        monkeypatch.setattr("wandb.agents.pyagent.Agent.HEARTBEAT_SLEEP_SECONDS", float(AGENT_POLL))
        reset_wandb()
        yield double
    finally:
        reset_wandb()
        double.stop()
