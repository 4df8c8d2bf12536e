"""Trials of a W&B sweep in this process: the SDK's agent chooses, this thread trains.

``wandb.agent(function=...)`` calls the function in a thread of its own for each
run, and stops a run (hyperband, the stop button) by raising an exception inside
that thread. Training there would leave the other ranks of a multi-rank trial in
a collective, and a signal never reaches it. So the agent runs in a side thread
whose function only hands the run over and waits; the calling thread trains.
The agent's stop lands in the waiting function, which turns it into the run's
``should_stop``: rank 0 sees it and every rank ends training at the same step.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from wbsweep.backends.records import ClaimedRun, DriveOptions, InProcessTrial

__all__ = ["drive_with_agent"]

_POLL = 0.2  # how often the waiting function runs Python, so a stop can land in it


@dataclass
class _Handed:
    """One run handed from the agent's thread to the training thread."""

    claimed: ClaimedRun
    stop: threading.Event
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


def drive_with_agent(
    start_agent: Callable[[Callable[[], None]], None],
    make_claim: Callable[[str, Callable[[], bool]], ClaimedRun],
    trial: InProcessTrial,
    options: DriveOptions,
) -> None:
    """Run ``start_agent(function)`` in a side thread; run each handed run's ``trial`` here.

    ``make_claim(run_id, should_stop)`` builds the run from what the agent exported.
    Raises what the agent raised (after the last trial), or what interrupted this thread.
    """
    handed: queue.Queue[_Handed] = queue.Queue()
    failure: list[BaseException] = []

    def function() -> None:  # in the agent's per-run thread
        stop = threading.Event()
        item = _Handed(make_claim(os.environ["WANDB_RUN_ID"], stop.is_set), stop)
        handed.put(item)
        try:
            while not item.done.wait(_POLL):
                pass
        except Exception:  # the agent stops this run: every rank ends at the same step
            stop.set()
            while not item.done.wait(_POLL):
                pass
            raise
        if item.error is not None:
            raise item.error  # the agent records the run failed and goes on

    def agent() -> None:
        try:
            start_agent(function)
        except BaseException as exc:  # noqa: BLE001 - raised again in the calling thread
            failure.append(exc)

    thread = threading.Thread(target=agent, name="wbsweep-wandb-agent", daemon=True)
    thread.start()
    while thread.is_alive() or not handed.empty():
        try:
            item = handed.get(timeout=_POLL)
        except queue.Empty:
            continue
        try:
            trial(item.claimed)
        except Exception as exc:  # noqa: BLE001 - the agent's thread raises it for the agent
            item.error = exc
        finally:
            item.done.set()
    thread.join()
    if failure:
        raise failure[0]
