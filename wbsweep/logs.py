"""A trial's log on this machine: printed whole, or followed as ``tail -f`` does.

Where a log lives is the backend's answer (``Backend.trial_logs``): on the
local store ``sweep-<id>/run-<run id>.log`` beside the store (cold and warm
trials alike); on W&B a warm trial's own log, else the log of the worker that
ran it (``wbsweep agent`` with live progress keeps one per worker).
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["FOLLOW_POLL", "follow", "show"]

#: Seconds between two looks at a followed log.
FOLLOW_POLL = 0.25
_CHUNK = 1 << 16


def show(path: str | Path, write: Callable[[str], None]) -> int:
    """Write the whole log; the offset it ended at."""
    with open(path, "rb") as log:
        return _copy(log, _decoder(), write)


def follow(
    path: str | Path,
    write: Callable[[str], None],
    *,
    done: Callable[[], bool],
    poll: float = FOLLOW_POLL,
    check_every: float = 1.0,
) -> None:
    """Write the log, then what is appended to it, until ``done()`` and nothing is left.

    ``done`` (has the run ended?) is asked at most every ``check_every`` seconds;
    once it says so, what the trial wrote last is written and this returns.
    Ctrl-C (``KeyboardInterrupt``) ends it too, at the caller's.
    """
    decoder = _decoder()
    with open(path, "rb") as log:
        _copy(log, decoder, write)
        checked = time.monotonic()
        while True:
            if _copy(log, decoder, write):
                continue
            if time.monotonic() - checked >= check_every:
                checked = time.monotonic()
                if done():
                    _copy(log, decoder, write)
                    return
            time.sleep(poll)


def _decoder() -> codecs.IncrementalDecoder:
    # A character split between two reads is written whole, with the second.
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def _copy(log: BinaryIO, decoder: codecs.IncrementalDecoder, write: Callable[[str], None]) -> int:
    """Write what the open file has past its position; how many bytes there were."""
    total = 0
    while True:
        chunk = log.read(_CHUNK)
        if not chunk:
            return total
        total += len(chunk)
        text = decoder.decode(chunk)
        if text:
            write(text)
