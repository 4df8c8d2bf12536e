"""``wbsweep agent``: run a sweep's trials on this node, alone or as one of several nodes."""

from __future__ import annotations

import os
import sys

import click

from wbsweep._cli_options import count_option, store_option
from wbsweep.backends import backend_for_sweep
from wbsweep.backends.base import DEFAULT_MAX_FAILURES, DEFAULT_MAX_RETRIES, DriveOptions
from wbsweep.errors import UsageError
from wbsweep.follower import follow_node
from wbsweep.nodes import DEFAULT_PORT, NodeGroup, finish, serve
from wbsweep.slots import SWEEP_FILE_ENV
from wbsweep.states import RunState

__all__ = ["agent"]


@click.command()
@click.argument("sweep")
@click.option("--workers", type=int, default=None, help="Workers on this node (CPU: default 1).")
@click.option(
    "--processes-per-trial", type=int, default=None, help="CPU ranks per trial [default: 1]."
)
@click.option("--gpus-per-trial", type=int, default=None, help="GPUs (ranks) per trial.")
@count_option(
    "--max-consecutive-failures",
    1,
    DEFAULT_MAX_FAILURES,
    "A worker gives up after this many trials failed in a row.",
)
@count_option("--max-retries", 0, DEFAULT_MAX_RETRIES, "Reruns of a crashed run's params.")
@click.option(
    "--accelerate-config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Your accelerate config (mixed precision, FSDP, DeepSpeed...) "
    "[default: accelerate's default config, when there is one].",
)
@click.option(
    "--sweep-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="The sweep file on this node [default: the sweep's, relative to here].",
)
@click.option("--count", type=int, default=None, help="The most trials each worker runs.")
@click.option("-p", "--project", default=None, help="W&B project of a bare sweep id.")
@click.option("-e", "--entity", default=None, help="W&B entity of a bare sweep id.")
@click.option(
    "--nodes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Nodes that run each trial together (one worker each).",
)
@click.option(
    "--node-rank",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="This node's rank; node 0 takes the runs.",
)
@click.option("--main-host", default=None, help="Node 0's address, with --nodes.")
@click.option(
    "--main-port",
    type=int,
    default=DEFAULT_PORT,
    show_default=True,
    help="Where node 0's agent serves the nodes; the ranks meet at the next port.",
)
@click.option(
    "--warm/--cold",
    default=None,
    help="Warm (the default): each worker keeps one accelerate process group for all "
    "its trials, with no start-up between trials. Cold: a new accelerate launch per "
    "trial (the default with --nodes, or when the sweep's command is not wbsweep's trial).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Live progress in place of the workers' output (which goes to a log file per "
    "worker) [default: when stdout is a terminal].",
)
@store_option
def agent(
    sweep: str,
    workers: int | None,
    processes_per_trial: int | None,
    gpus_per_trial: int | None,
    max_consecutive_failures: int,
    max_retries: int,
    accelerate_config: str | None,
    sweep_file: str | None,
    count: int | None,
    project: str | None,
    entity: str | None,
    nodes: int,
    node_rank: int,
    main_host: str | None,
    main_port: int,
    warm: bool | None,
    progress: bool | None,
    store: str | None,
) -> None:
    """Run trials of SWEEP on this node until the sweep is done.

    Exits 0 when the sweep has nothing left for this node, 130 or 143 when
    stopped by Ctrl-C or SIGTERM, 9 when a worker gave up on failing trials.
    """
    from wbsweep.agent import run_agent, visible_gpus
    from wbsweep.shape import sweep_shape
    from wbsweep.slots import shaped_slots, user_accelerate_config
    from wbsweep.warm import runs_warm

    user_config = user_accelerate_config(accelerate_config)
    if sweep_file is not None and not os.path.isfile(sweep_file):
        raise UsageError(f"--sweep-file {sweep_file!r} not found")
    if count is not None and count < 1:
        raise UsageError(f"--count must be at least 1, got {count}")
    group = NodeGroup(nodes, node_rank, main_host or "", main_port) if nodes > 1 else None
    node_env = {SWEEP_FILE_ENV: os.path.abspath(sweep_file)} if sweep_file else {}
    if group is not None and warm:
        raise UsageError("--warm runs each trial on one node: leave out --nodes or --warm")
    if group is not None and workers not in (None, 1):
        raise UsageError("--nodes runs one worker on each node: leave out --workers")
    if group is not None and group.rank > 0:
        # Only node 0 talks to the sweep's backend; this node joins its trials.
        sys.exit(
            follow_node(
                group,
                gpus_per_trial=gpus_per_trial,
                processes_per_trial=processes_per_trial,
                accelerate=user_config,
                env=node_env,
                log=click.echo,
            )
        )
    target, sweep_id = backend_for_sweep(sweep, store=store, entity=entity, project=project)
    record = target.sweep(sweep_id)
    shape = sweep_shape(record.config.get("command"))
    slots, overridden = shaped_slots(
        shape,
        visible_gpus(os.environ),
        gpus_per_trial=gpus_per_trial,
        processes_per_trial=processes_per_trial,
        what=f"sweep {sweep_id}",
        workers=1 if group is not None else workers,
    )
    user_config = shape.accelerate_config(user_config)
    if warm is None:  # warm where it can be: one node per trial, wbsweep's own trial command
        warm = group is None and runs_warm(record.config)
    click.echo(f"Sweep {sweep_id}: {record.state.lower()}, {len(slots)} worker(s) on this node.")
    if shape.recorded:
        click.echo(
            f"Trials: {shape.describe()}"
            + (f"; overridden here: {slots[0].num_processes} per trial." if overridden else ".")
        )
    limits = DriveOptions(
        "", count, max_consecutive_failures=max_consecutive_failures, max_retries=max_retries
    )
    served = serve(group, record.config.get("command") or []) if group is not None else None
    code = run_agent(
        target,
        sweep_id,
        slots,
        limits=limits,
        accelerate=user_config,
        sweep_file=sweep_file,
        overridden=overridden,
        env=group.env() if group is not None else None,
        warm=warm,
        progress=sys.stdout.isatty() if progress is None else progress,
    )
    if group is not None:
        finish(group, served, code)
    runs = target.runs(sweep_id)
    counts = {s: sum(r.state == s for r in runs) for s in RunState}
    shown = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    state = target.sweep(sweep_id).state.lower()
    click.echo(f"Sweep {sweep_id}: {state}; runs: {shown or 'none'}.")
    sys.exit(code)
