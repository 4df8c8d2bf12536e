"""A warm W&B worker's SDK agent asks for the next run as soon as a trial ends."""

from __future__ import annotations

import threading
import time

import pytest

from wbsweep import warm_wandb


def test_the_sdk_agent_s_heartbeat_sleep_ends_when_a_trial_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDK's agent module sleeps through the clock a trial's end wakes.

    ``_poll_sooner`` changes the SDK's agent module for the worker process; it
    is undone here. If a new SDK no longer sleeps through ``time.sleep`` this
    fails: the worker still runs, at the plain 1 s poll.
    """
    from wandb.agents import pyagent

    monkeypatch.setattr(pyagent, "time", pyagent.time)
    monkeypatch.setattr(pyagent.Agent, "HEARTBEAT_SLEEP_SECONDS", 5)
    clock = warm_wandb._poll_sooner()
    assert clock is not None and pyagent.time is clock
    assert pyagent.Agent.HEARTBEAT_SLEEP_SECONDS == warm_wandb.AGENT_POLL
    assert pyagent.time.time() == pytest.approx(time.time(), abs=1)  # the rest is time's

    slept: list[float] = []

    def heartbeat_sleep() -> None:  # as the agent's heartbeat thread sleeps
        started = time.monotonic()
        pyagent.time.sleep(pyagent.Agent.HEARTBEAT_SLEEP_SECONDS)
        slept.append(time.monotonic() - started)

    sleeper = threading.Thread(target=heartbeat_sleep)
    sleeper.start()
    time.sleep(0.1)
    clock.wake_soon()
    sleeper.join(2)
    assert slept and 0.1 <= slept[0] < 0.5, slept
    # Unwoken, a sleep is the whole poll.
    started = time.monotonic()
    clock.sleep(0.3)
    assert time.monotonic() - started >= 0.3
