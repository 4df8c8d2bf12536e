"""``accelerate launch`` as a trial runs it: ``python -m wbsweep.accelerate launch ...``.

The same command line, config file and launchers as the ``accelerate`` console
script, with one difference: a signal to the launcher leaves its rank the whole
grace period that the agent or the scheduler gives.

Since accelerate 1.16, a SIGTERMed single-process launcher (a 1-rank trial,
and DeepSpeed's) sends SIGTERM to its child and every process below it, the
rank's ``wandb-core`` included, and SIGKILLs them all 5 s later. A rank that
was saving its preemption checkpoint, or sending its last W&B run, is cut off.
Here the launcher passes each SIGTERM on to its child alone and waits for it:
the rank decides what the signal means (a preemption checkpoint, a stop), and
its helpers outlive it as they should. What bounds the wait is whoever sent
the signal (the worker's kill delay, the agent's grace period, the
scheduler's SIGKILL), as with every other process of a trial.

Releases before 1.16 need nothing: their launcher leaves at once and its rank
gets SIGTERM from its parent-death signal. Multi-process launches (torchrun's
elastic agent) are as accelerate runs them.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Any

__all__ = ["main", "pass_signals_to_the_child"]


def _pass_on(process: Any) -> None:
    """Stand-in for accelerate's ``_terminate_process_tree``: SIGTERM the child, wait."""
    import psutil

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):  # the child is gone
            process.send_signal(signum)

    # Later SIGTERMs go to the child too (it tells a second notice from the first).
    signal.signal(signal.SIGTERM, forward)
    forward(signal.SIGTERM, None)
    process.wait()


def pass_signals_to_the_child() -> None:
    """Make this process's accelerate launcher pass SIGTERM on instead of ending the tree
    (accelerate 1.16 and later; earlier releases have no tree to end)."""
    from accelerate.commands import launch

    if callable(getattr(launch, "_terminate_process_tree", None)):
        launch._terminate_process_tree = _pass_on  # noqa: SLF001 - see the module docstring


def main() -> int:
    """Run accelerate's CLI (``launch ...``) with :func:`pass_signals_to_the_child`."""
    pass_signals_to_the_child()
    from accelerate.commands.accelerate_cli import main as accelerate_cli

    sys.argv = ["accelerate", *sys.argv[1:]]
    accelerate_cli()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
