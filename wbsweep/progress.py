"""Live progress of a sweep, as ``wbsweep agent`` shows it on a terminal.

The numbers come from the sweep's own record, read through the backend every
second (:attr:`LiveProgress.poll`): each run's state, and the progress its
trial's rank 0 reports every few seconds (``RunRecord.progress``: step of total,
the sweep metric at the latest evaluation). Nothing is read from the workers'
output, which goes to one log file per worker meanwhile.

:func:`render` is a pure function of the records; :class:`LiveProgress` polls
and redraws it in place with ``rich``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from wbsweep import views
from wbsweep.backends.base import RunRecord, RunState, SweepRecord
from wbsweep.errors import WbsweepError

__all__ = ["POLL", "LiveProgress", "render", "watch"]

#: Seconds between two reads of the sweep's record.
POLL = 1.0

#: ``read() -> (sweep, runs)``: the sweep's record now.
Reader = Callable[[], tuple[SweepRecord, list[RunRecord]]]


def render(
    sweep: SweepRecord,
    runs: Sequence[RunRecord],
    workers: Sequence[str],
    *,
    now: float | None = None,
    problem: str | None = None,
) -> RenderableType:
    """The sweep's totals and best so far, then one line per worker of this node.

    ``workers`` are this node's worker names; a running run whose worker is not
    among them (another node's) gets a line of its own. ``problem`` is why the
    record could not be read just now.
    """
    now = time.time() if now is None else now
    lines: list[RenderableType] = [_totals(sweep, runs)]
    best = views.best_of(runs, sweep.goal)
    if best is not None:
        lines.append(
            Text.assemble(
                ("best ", "bold"),
                f"{sweep.metric_name} {best.objective:.6g}  run {best.id}  ",
                (views.short_params(best.params, best.unused_params), "dim"),
            )
        )
    lines.append(_workers(sweep, runs, workers, now))
    failed = [r for r in runs if r.state in (RunState.FAILED, RunState.CRASHED)]
    if failed:
        last = failed[-1]
        reason = last.reason or "see its log"
        lines.append(
            Text(
                f"last failure: run {last.id}: {reason}  (wbsweep logs {sweep.id} {last.id})",
                style="red",
                overflow="ellipsis",
                no_wrap=True,
            )
        )
    if problem:
        lines.append(Text(f"cannot read the sweep just now: {problem}", style="yellow"))
    return Group(*lines)


def _totals(sweep: SweepRecord, runs: Sequence[RunRecord]) -> Text:
    count = {state: sum(r.state == state for r in runs) for state in RunState}
    failed = count[RunState.FAILED] + count[RunState.CRASHED]
    of = sweep.run_cap or views.grid_size(sweep.config)
    text = Text.assemble(
        (f"Sweep {sweep.id}", "bold"),
        f"  {sweep.state.lower()}  ",
        (f"{count[RunState.FINISHED]} finished", "green"),
        ", ",
        (f"{count[RunState.RUNNING]} running", "cyan"),
        ", ",
        (f"{failed} failed", "red" if failed else ""),
    )
    stopped = count[RunState.STOPPED] + count[RunState.PREEMPTED]
    if stopped:
        text.append(f", {stopped} stopped")
    text.append(f" of {of}" if of else f" ({len(runs)} so far)")
    return text


#: Columns of a worker's line: name, run, params, bar, step/total, latest evaluation, time.
_PARAMS, _BAR = 2, 3
_BAR_WIDTH = 20
_GAP = 2


def _workers(
    sweep: SweepRecord, runs: Sequence[RunRecord], workers: Sequence[str], now: float
) -> _WorkerLines:
    running = [r for r in runs if r.state == RunState.RUNNING]
    mine = {name: [r for r in running if r.worker == name] for name in workers}
    others = [r for r in running if r.worker not in mine]
    rows: list[list[RenderableType]] = []
    for name, run in itertools.chain(
        ((name, found[-1] if found else None) for name, found in mine.items()),
        ((r.worker or "elsewhere", r) for r in others),
    ):
        if run is None:
            idle = "done" if sweep.state.terminal else "waiting"
            rows.append([Text(name, style="bold"), Text(idle, style="dim")])
        else:
            rows.append(_run_cells(name, run, sweep.metric_name, now))
    return _WorkerLines(rows)


class _WorkerLines:
    """The workers' lines as a grid whose params column takes the width the rest leave.

    Every other column keeps its whole width, so a narrow terminal cuts the params
    short (or leaves them out) rather than a worker's name, step or time.
    """

    def __init__(self, rows: list[list[RenderableType]]) -> None:
        self.rows = rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        widths = [0] * 7
        for row in self.rows:
            for index, cell in enumerate(row):
                size = _BAR_WIDTH if isinstance(cell, ProgressBar) else _cell_len(cell)
                widths[index] = max(widths[index], size)
        gap, room = _GAP, options.max_width
        rest = sum(w for i, w in enumerate(widths) if i != _PARAMS)
        if rest + gap * 5 > room:  # narrow: a shorter bar, then narrower gaps
            widths[_BAR] = max(6, widths[_BAR] - (rest + gap * 5 - room))
            rest = sum(w for i, w in enumerate(widths) if i != _PARAMS)
            gap = 1 if rest + gap * 5 > room else gap
        widths[_PARAMS] = max(0, min(widths[_PARAMS], room - rest - gap * 6))
        shown = widths[_PARAMS] >= 8  # narrower says nothing: left out
        table = Table.grid(padding=(0, gap))
        for index, width in enumerate(widths):
            if index != _PARAMS or shown:
                table.add_column(no_wrap=True, width=width or None, overflow="ellipsis")
        for row in self.rows:
            cells = row if shown or len(row) <= _PARAMS else row[:_PARAMS] + row[_PARAMS + 1 :]
            for cell in cells:
                if isinstance(cell, ProgressBar):
                    cell.width = widths[_BAR]
            table.add_row(*cells)
        yield table


def _cell_len(cell: RenderableType) -> int:
    return cell.cell_len if isinstance(cell, Text) else Text(str(cell)).cell_len


def _run_cells(name: str, run: RunRecord, metric: str, now: float) -> list[RenderableType]:
    progress = run.progress
    step, total = progress.get("step"), progress.get("total")
    if step is not None and total:
        bar: RenderableType = ProgressBar(
            total=float(total), completed=float(step), width=_BAR_WIDTH
        )
    else:
        bar = Text("starting" if step is None else "", style="dim")
    value = progress.get("eval")
    latest = (
        f"{metric} {value:.4g} @ {progress.get('eval_step')}"
        if isinstance(value, int | float)
        else ""
    )
    if progress.get("phase") == "evaluating":
        latest = "final evaluation"
    start = progress.get("started_at") or run.started_at or run.claimed_at
    elapsed = views.duration(now - start) if start else ""
    return [
        Text(name, style="bold"),
        Text(f"run {run.id}"),
        Text(views.short_params(run.params, run.unused_params), style="dim"),
        bar,
        Text(views.steps(progress)),
        Text(latest),
        Text(elapsed),
    ]


class LiveProgress:
    """Redraws :func:`render` in place every ``poll`` seconds while the block runs.

    The record is read in a thread; an error reading it is shown and the next
    poll tries again. Print through the console (or plain ``print``: ``rich``
    puts it above the display) while it runs.
    """

    def __init__(
        self,
        read: Reader,
        workers: Sequence[str],
        *,
        console: Console | None = None,
        poll: float = POLL,
    ) -> None:
        self.read = read
        self.workers = list(workers)
        self.console = console or Console()
        self.poll = poll
        self._live: Live | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown: tuple[SweepRecord, list[RunRecord]] | None = None

    def __enter__(self) -> LiveProgress:
        self._live = Live(
            Text("reading the sweep..."),
            console=self.console,
            auto_refresh=False,
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self._live.start()
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=10 * self.poll + 60)
        try:
            self.refresh()  # the last frame stays on the terminal
        finally:
            if self._live is not None:
                self._live.stop()

    def refresh(self) -> None:
        """Read the record and redraw now."""
        problem = None
        try:
            self._shown = self.read()
        except WbsweepError as exc:
            problem = str(exc)
        if self._shown is None or self._live is None:
            if self._live is not None and problem:
                self._live.update(Text(f"cannot read the sweep: {problem}"), refresh=True)
            return
        sweep, runs = self._shown
        self._live.update(render(sweep, runs, self.workers, problem=problem), refresh=True)

    def _loop(self) -> None:
        while not self._done.wait(self.poll):
            self.refresh()


def watch(
    frame: Callable[[], RenderableType], *, console: Console | None = None, poll: float = POLL
) -> None:
    """Redraw ``frame()`` in place every ``poll`` seconds until Ctrl-C, which ends it cleanly.

    A ``WbsweepError`` from ``frame`` is shown in its place until the next poll.
    """

    def drawn() -> RenderableType:
        try:
            return frame()
        except WbsweepError as exc:
            return Text(f"cannot read the sweep just now: {exc}", style="yellow")

    with Live(drawn(), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(poll)
                live.update(drawn(), refresh=True)
        except KeyboardInterrupt:
            pass
