"""The one exceptions module: every error a user can cause is a ``WbsweepError``.

The CLI turns each into a one-line message and a non-zero exit code; library
code never imports click.
"""

from __future__ import annotations


class WbsweepError(Exception):
    """Root of all wbsweep errors; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class SweepFileError(WbsweepError):
    """The sweep file cannot be imported or lacks something a trial needs."""

    exit_code = 2


class SpaceError(WbsweepError):
    """``hp_space`` cannot be turned into a valid W&B parameters section."""

    exit_code = 2


class ConfigError(WbsweepError):
    """The sweep config (method, metric, early_terminate, command) is invalid."""

    exit_code = 2


class StoreError(WbsweepError):
    """The local store cannot be read or written."""

    exit_code = 3


class SweepNotFoundError(WbsweepError):
    """No sweep with the given id exists in the backend."""

    exit_code = 4


class NoBestRunError(WbsweepError):
    """The sweep has no finished run with a finite objective yet."""

    exit_code = 5


class TrialError(WbsweepError):
    """A trial failed in a way the trial entrypoint can explain."""

    exit_code = 6
