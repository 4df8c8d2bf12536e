"""The ``wbsweep`` command line: parse, call the library, print.

Every ``WbsweepError`` becomes a one-line ``Error: ...`` and its exit code;
anything unexpected too, with the traceback only under ``WBSWEEP_DEBUG=1``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import traceback
from typing import Any

import click

from wbsweep import __version__
from wbsweep._cli_options import store_option
from wbsweep.backends import (
    BACKEND_ENV,
    BACKENDS,
    auto_reason,
    backend_for_sweep,
    choose_backend,
    open_backend,
)
from wbsweep.errors import (
    DEBUG_ENV,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    UsageError,
    WbsweepError,
    debug_enabled,
)
from wbsweep.shape import MIXED_PRECISION
from wbsweep.states import SweepState


class _Group(click.Group):
    """Turns library errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WbsweepError as exc:
            _fail(str(exc), exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        except Exception as exc:
            if debug_enabled():
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            _fail(
                f"unexpected {type(exc).__name__}: {first} (set {DEBUG_ENV}=1 for the traceback)",
                EXIT_FAILED,
            )


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {' '.join(message.split())}", err=True)
    if debug_enabled():
        traceback.print_exc()
    sys.exit(code)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="wbsweep")
def main() -> None:
    """W&B sweeps for Hugging Face Trainer jobs."""


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--method", type=click.Choice(["grid", "random", "bayes"]), default=None)
@click.option("--n-trials", type=int, default=None, help="Sweep-wide cap on runs (run_cap).")
@click.option("--direction", type=click.Choice(["minimize", "maximize"]), default=None)
@click.option("--metric", default=None, help="Name of the sweep metric [default: objective].")
@click.option("--name", default=None, help="Display name of the sweep.")
@click.option(
    "--hyperband-min-iter",
    type=int,
    default=None,
    help="Stop weak runs early with hyperband, first bracket at this many logged steps.",
)
@click.option("--hyperband-eta", type=int, default=3, show_default=True, help="Hyperband's eta.")
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default=None,
    help="Where the sweep lives [default: $WBSWEEP_BACKEND, else auto: wandb when "
    "logged in, local otherwise].",
)
@click.option("--project", default=None, help="W&B project [default: SWEEP's, else wbsweep].")
@click.option("--entity", default=None, help="W&B entity [default: your default entity].")
@click.option("--gpus-per-trial", type=int, default=None, help="Each trial runs on this many GPUs.")
@click.option(
    "--processes-per-trial",
    type=int,
    default=None,
    help="Ranks per trial, on GPUs or CPU [default: 1].",
)
@click.option(
    "--mixed-precision",
    type=click.Choice(MIXED_PRECISION),
    default=None,
    help="Every trial's mixed precision [default: your accelerate config's, else no].",
)
@store_option
@click.option("--dry-run", is_flag=True, help="Print the sweep config; register nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.argument("accelerate_args", nargs=-1, type=click.UNPROCESSED)
def create(
    sweep_file: str,
    method: str | None,
    n_trials: int | None,
    direction: str | None,
    metric: str | None,
    name: str | None,
    hyperband_min_iter: int | None,
    hyperband_eta: int,
    backend: str | None,
    project: str | None,
    entity: str | None,
    gpus_per_trial: int | None,
    processes_per_trial: int | None,
    mixed_precision: str | None,
    store: str | None,
    dry_run: bool,
    as_json: bool,
    accelerate_args: tuple[str, ...],
) -> None:
    """Turn SWEEP_FILE's hp_space into a W&B sweep config and register it.

    The trial shape (ranks per trial, mixed precision, and any ACCELERATE_ARGS
    given after ``--``, for ``accelerate launch``) is recorded in the sweep, so
    every node runs trials the same way.
    """
    from wbsweep.prepare import SweepOptions, prepare_sweep
    from wbsweep.shape import TrialShape
    from wbsweep.slots import user_accelerate_config

    if mixed_precision is None:
        mixed_precision = str(user_accelerate_config(None).get("mixed_precision") or "no")
    shape = TrialShape.from_options(
        gpus_per_trial=gpus_per_trial,
        processes_per_trial=processes_per_trial,
        mixed_precision=mixed_precision,
        accelerate_args=accelerate_args,
    )

    options = SweepOptions(
        method=method,
        n_trials=n_trials,
        direction=direction,
        metric=metric,
        name=name,
        hyperband_min_iter=hyperband_min_iter,
        hyperband_eta=hyperband_eta,
        project=project,
        shape=shape,
    )
    prepared = prepare_sweep(sweep_file, options)
    if dry_run:
        config = prepared.config
        click.echo(json.dumps(config, indent=2) if as_json else _yaml(config))
        return
    requested = backend or os.environ.get(BACKEND_ENV) or "auto"
    chosen = choose_backend(requested)
    config = prepared.config
    if project is None and prepared.project:
        # SWEEP["project"] ranks below WANDB_PROJECT: it goes with the config,
        # where the backend weighs it (`wbsweep.wandb_run.resolve_project`).
        config = {**config, "project": prepared.project}
    target = open_backend(chosen, store=store, entity=entity, project=project)
    sweep_id = target.create(config, sweep_file=prepared.sweep_file)
    agent_argv = target.agent_command(sweep_id)
    out: dict[str, Any] = {"sweep_id": sweep_id, "backend": chosen, "agent_command": agent_argv}
    url = target.sweep_url(sweep_id)
    if url is not None:
        out["url"] = url
    if as_json:
        click.echo(json.dumps({**out, "config": prepared.config}, indent=2))
        return
    if requested == "auto":
        click.echo(f"Backend: {chosen} (auto: {auto_reason(chosen)}).")
    click.echo(f"Created sweep {sweep_id} in {target.location}.")
    click.echo(f"Trials: {shape.describe()}.")
    if "url" in out:
        click.echo(f"View it at {out['url']}")
    click.echo("Start agents with:")
    click.echo(f"  {shlex.join(agent_argv)}")


@main.command()
@click.argument("sweep")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the BestRun as JSON.")
@click.option(
    "--args", "as_args", is_flag=True, help="Print the best params as TrainingArguments overrides."
)
@click.option(
    "--sweep-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --args: the sweep file whose hp_space is replayed [default: the sweep's].",
)
def best(
    sweep: str, store: str | None, as_json: bool, as_args: bool, sweep_file: str | None
) -> None:
    """The BestRun of SWEEP, over every worker that ran it."""
    from wbsweep.best import best_run

    target, sweep_id = backend_for_sweep(sweep, store=store)
    result = best_run(target, sweep_id)
    if as_args:
        from wbsweep.retrain import best_overrides
        from wbsweep.sweepfile import load_sweep_file

        path = sweep_file or target.sweep(sweep_id).sweep_file
        if path and os.path.isfile(path):
            tokens, model_params = best_overrides(load_sweep_file(path), result.hyperparameters)
        else:
            if sweep_file:
                raise UsageError(f"--sweep-file {sweep_file!r} not found")
            click.echo("hp_space not replayed: no sweep file here (--sweep-file)", err=True)
            tokens, model_params = best_overrides(None, result.hyperparameters)
        click.echo(shlex.join(tokens))
        if model_params:
            shown = " ".join(f"{k}={v}" for k, v in model_params.items())
            click.echo(f"model_init params (not TrainingArguments): {shown}", err=True)
        return
    if as_json:
        click.echo(json.dumps(result._asdict(), indent=2))
        return
    click.echo(f"Best run: {result.run_id}")
    click.echo(f"Objective: {result.objective:.6g}")
    click.echo("Hyperparameters:")
    for key, value in result.hyperparameters.items():
        click.echo(f"  {key}: {value}")


@main.command()
@click.argument("sweep")
@store_option
@click.option("--full", is_flag=True, help="Train on train+eval (nothing held out).")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None)
@click.option(
    "--sweep-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="The sweep file [default: the one the sweep was created from].",
)
def retrain(
    sweep: str, store: str | None, full: bool, output_dir: str | None, sweep_file: str | None
) -> None:
    """Train and save the final model with SWEEP's best hyperparameters."""
    from wbsweep.best import best_run
    from wbsweep.retrain import retrain as run_retrain
    from wbsweep.sweepfile import load_sweep_file

    target, sweep_id = backend_for_sweep(sweep, store=store)
    path = sweep_file or target.sweep(sweep_id).sweep_file
    if not path:
        raise UsageError(f"sweep {sweep_id} does not name its sweep file; pass --sweep-file")
    result = best_run(target, sweep_id)
    click.echo(f"Retraining with run {result.run_id} (objective {result.objective:.6g})")
    done = run_retrain(
        load_sweep_file(path), result, full=full, output_dir=output_dir, sweep_id=sweep_id
    )
    for key, value in done.metrics.items():
        click.echo(f"  {key}: {value:.6g}")
    click.echo(f"Saved the model and its training arguments to {done.output_dir}")


@main.command()
@click.argument("sweep")
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    default="report.html",
    show_default=True,
    help="The HTML file to write (self-contained: opens offline).",
)
@click.option(
    "--png",
    "png_dir",
    type=click.Path(),
    default=None,
    help="Also write the plots as PNG images into this directory.",
)
@store_option
def report(sweep: str, output: str, png_dir: str | None, store: str | None) -> None:
    """Write an HTML report of SWEEP: runs, plots, parameter importance, metric curves."""
    from wbsweep.report import write_report

    target, sweep_id = backend_for_sweep(sweep, store=store)
    done = write_report(target, sweep_id, output, png_dir)
    click.echo(f"Wrote {done.html} ({done.runs} runs, {done.scored} with an objective).")
    if done.scored == 0:
        click.echo("No run has a finite objective yet: the report lists the runs only.", err=True)
    for path in done.pngs:
        click.echo(f"Wrote {path}")


@main.command()
@click.argument("sweep")
@click.option("--project", "-p", required=True, help="W&B project to upload the runs to.")
@click.option("--entity", "-e", default=None, help="W&B entity [default: your default entity].")
@store_option
@click.option(
    "--wandb-dir",
    "wandb_dirs",
    multiple=True,
    type=click.Path(file_okay=False),
    help="Where the trials' wandb/ folder is (repeatable) [default: $WANDB_DIR, the "
    "working directory, the store's directory].",
)
def sync(
    sweep: str, project: str, entity: str | None, store: str | None, wandb_dirs: tuple[str, ...]
) -> None:
    """Upload local sweep SWEEP's runs to W&B, in a W&B sweep with the same config.

    Run again to upload runs that ended since: runs uploaded before are not
    uploaded twice, and they stay in the same W&B sweep.
    """
    from wbsweep.sync import sync_sweep

    result = sync_sweep(
        open_backend("local", store=store),
        sweep,
        lambda: open_backend("wandb", entity=entity, project=project),
        wandb_dirs=wandb_dirs,
    )
    click.echo(
        f"Synced sweep {sweep} to W&B sweep {result.sweep}: {result.runs} run(s), "
        f"{result.uploaded} uploaded now."
    )
    if result.skipped:
        click.echo(f"Not synced: {result.skipped} run(s) still running or without offline runs.")
    if result.url:
        click.echo(f"View it at {result.url}")


def _state_command(state: SweepState, verb: str) -> click.Command:
    @click.argument("sweep")
    @store_option
    def command(sweep: str, store: str | None) -> None:
        target, sweep_id = backend_for_sweep(sweep, store=store)
        target.set_state(sweep_id, state)
        click.echo(f"Sweep {sweep_id}: {state.value.lower()}.")

    command.__doc__ = f"{verb} SWEEP."
    return click.command(name=verb.split()[0].lower())(command)


main.add_command(_state_command(SweepState.PAUSED, "Pause"))
main.add_command(_state_command(SweepState.RUNNING, "Resume"))
main.add_command(_state_command(SweepState.FINISHED, "Stop (no new runs; running ones finish)"))
main.add_command(_state_command(SweepState.CANCELED, "Cancel (running trials are stopped)"))


def _yaml(config: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False).rstrip()


# Registered last: the agent command lives in its own module, as do the readers.
from wbsweep.cli_agent import agent  # noqa: E402
from wbsweep.cli_status import logs, status, sweeps  # noqa: E402

main.add_command(agent)
main.add_command(status)
main.add_command(sweeps)
main.add_command(logs)

if __name__ == "__main__":
    main()
