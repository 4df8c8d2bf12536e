"""The one exceptions module, and every exit code wbsweep uses.

Every error a user can cause is a :class:`WbsweepError`; each subclass carries
the exit code the CLI (and the trial entry point) exits with. Library code
never imports click: the CLI turns these into one-line messages.

>>> SweepNotFoundError("no sweep 'x'").exit_code == EXIT_NOT_FOUND
True
>>> debug_enabled({"WBSWEEP_DEBUG": "0"}), debug_enabled({"WBSWEEP_DEBUG": "yes"})
(False, True)
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Exit codes, as the README lists them.
EXIT_OK = 0
EXIT_FAILED = 1  # an unexpected error, or a trial that failed for the user's code
EXIT_USAGE = 2  # click's own: an unknown option, a missing argument, a value not among the choices
EXIT_STORE = 3  # the local store cannot be read or written
EXIT_NOT_FOUND = 4  # no such sweep (or run)
EXIT_NO_BEST = 5  # no finished run with a finite objective yet
EXIT_TRIAL = 6  # a trial failed in a way wbsweep can explain
EXIT_LOGIN = 7  # not logged in to W&B, or the key was rejected
EXIT_UNREACHABLE = 8  # the W&B server did not answer
EXIT_GAVE_UP = 9  # a worker stopped after too many trials failed in a row
EXIT_BAD_INPUT = 10  # a bad sweep file, hp_space, sweep config, option value or setting
EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM: what a shell reports for a SIGTERMed process

#: ``1``, ``true`` or ``yes`` (any case) shows tracebacks; anything else does not.
DEBUG_ENV = "WBSWEEP_DEBUG"
_TRUE = frozenset({"1", "true", "yes"})


def debug_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``WBSWEEP_DEBUG`` asks for tracebacks (only ``1``, ``true``, ``yes``)."""
    value = (os.environ if environ is None else environ).get(DEBUG_ENV, "")
    return value.strip().lower() in _TRUE


class WbsweepError(Exception):
    """Root of all wbsweep errors; ``exit_code`` is what the CLI exits with.

    A subclass names its code in its bases: ``class StoreError(WbsweepError,
    exit_code=EXIT_STORE)``; without one it keeps its parent's.
    """

    exit_code = EXIT_FAILED

    def __init_subclass__(cls, exit_code: int | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code


class UsageError(WbsweepError, exit_code=EXIT_BAD_INPUT):
    """A command-line value or library argument that cannot work (``--workers 0``)."""


class SweepFileError(WbsweepError, exit_code=EXIT_BAD_INPUT):
    """The sweep file cannot be imported or lacks something a trial needs."""


class SpaceError(WbsweepError, exit_code=EXIT_BAD_INPUT):
    """``hp_space`` cannot be turned into a valid W&B parameters section."""


class ConfigError(WbsweepError, exit_code=EXIT_BAD_INPUT):
    """The sweep config (method, metric, early_terminate, command) is invalid."""


class StoreError(WbsweepError, exit_code=EXIT_STORE):
    """The local store cannot be read or written."""


class SweepNotFoundError(WbsweepError, exit_code=EXIT_NOT_FOUND):
    """No sweep with the given id exists in the backend."""


class NoStoreError(SweepNotFoundError, StoreError):
    """The local store named does not exist, so no sweep or run is in it (exit code 4)."""


class SweepStateError(WbsweepError, exit_code=EXIT_FAILED):
    """The sweep cannot change to the asked state (it already finished or was canceled)."""


class NoBestRunError(WbsweepError, exit_code=EXIT_NO_BEST):
    """The sweep has no finished run with a finite objective yet."""


class TrialError(WbsweepError, exit_code=EXIT_TRIAL):
    """A trial failed in a way the trial entrypoint can explain."""


class TrialStopped(WbsweepError):
    """A trial ended early on purpose: the sweep's early termination (hyperband) stopped it."""


class WandbLoginError(WbsweepError, exit_code=EXIT_LOGIN):
    """No API key for the W&B server, or the server rejected it."""


class WandbUnreachableError(WbsweepError, exit_code=EXIT_UNREACHABLE):
    """The W&B server did not answer."""
