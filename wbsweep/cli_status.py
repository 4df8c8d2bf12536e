"""``wbsweep status``, ``wbsweep sweeps`` and ``wbsweep logs``: reading a sweep's record."""

from __future__ import annotations

import contextlib
import json
import sys

import click

from wbsweep import views
from wbsweep._cli_options import store_option
from wbsweep.backends import Backend, backend_for_sweep, open_backend
from wbsweep.errors import SweepNotFoundError, UsageError
from wbsweep.states import RunState

__all__ = ["logs", "status", "sweeps"]


@click.command()
@click.argument("sweep", required=False)
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON, every field of every run.")
@click.option("--watch", is_flag=True, help="Refresh the table every second until Ctrl-C.")
def status(sweep: str | None, store: str | None, as_json: bool, watch: bool) -> None:
    """Table of SWEEP's runs, best first: state, objective, params, times, why one failed.

    With no SWEEP: the store's sweeps, as ``wbsweep sweeps`` lists them.
    """
    if sweep is None:
        _list(open_backend("local", store=store), as_json)
        return
    if watch and as_json:
        raise UsageError("--watch redraws the table: leave out --json")
    target, sweep_id = backend_for_sweep(sweep, store=store)
    if as_json:
        record, runs = target.sweep(sweep_id), target.runs(sweep_id)
        logs = target.trial_logs(sweep_id, runs)
        click.echo(json.dumps(views.status_json(record, runs, logs), indent=2))
        return

    watched = target.watch(sweep_id)

    def text() -> str:
        record, runs = watched()
        return views.status_text(record, runs, target.trial_logs(sweep_id, runs))

    first = text()  # an unknown sweep is an error here, not a frame of the watch
    if not watch:
        click.echo(first)
        return
    from rich.text import Text

    from wbsweep.progress import watch as watch_frames

    watch_frames(lambda: Text(text()))


@click.command()
@store_option
@click.option("-p", "--project", default=None, help="List this W&B project's sweeps instead.")
@click.option("-e", "--entity", default=None, help="The W&B entity of --project.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sweeps(store: str | None, project: str | None, entity: str | None, as_json: bool) -> None:
    """The sweeps of the local store (or of a W&B project): state, runs, best so far."""
    if project or entity:
        target = open_backend("wandb", entity=entity, project=project)
    else:
        target = open_backend("local", store=store)
    _list(target, as_json)


def _list(target: Backend, as_json: bool) -> None:
    entries = [(record, target.runs(record.id)) for record in target.sweeps()]
    if as_json:
        out = []
        for record, runs in entries:
            best = views.best_of(runs, record.goal)
            out.append(
                {
                    "sweep_id": record.id,
                    "state": record.state,
                    "metric": {"name": record.metric_name, "goal": record.goal},
                    "run_cap": record.run_cap,
                    "created_at": record.created_at,
                    "runs": {s.value: sum(r.state == s for r in runs) for s in RunState},
                    "best": {"run_id": best.id, "objective": best.objective} if best else None,
                }
            )
        click.echo(json.dumps(out, indent=2))
        return
    if not entries:
        click.echo(f"No sweeps in {target.location}.")
        return
    click.echo(views.sweeps_table(entries))


@click.command()
@click.argument("sweep")
@click.argument("run")
@store_option
@click.option(
    "-f", "--follow", is_flag=True, help="Keep printing what the trial writes, as tail -f."
)
def logs(sweep: str, run: str, store: str | None, follow: bool) -> None:
    """Print the log of RUN of SWEEP kept on this machine (-f: until the run ends)."""
    from wbsweep import logs as trial_logs

    target, sweep_id = backend_for_sweep(sweep, store=store)
    found = [record for record in target.runs(sweep_id) if record.id == run]
    if not found:
        raise SweepNotFoundError(f"no run {run!r} in sweep {sweep_id}")
    path = target.trial_logs(sweep_id, found).get(run)
    if path is None:
        raise SweepNotFoundError(
            f"no log of run {run} on this machine (run {found[0].state}; a run's log is kept "
            "where its worker ran)"
        )

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    if not follow:
        trial_logs.show(path, write)
        return

    def ended() -> bool:
        return all(r.state.terminal for r in target.runs(sweep_id) if r.id == run)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a user leaves a followed log
        trial_logs.follow(path, write, done=ended)
