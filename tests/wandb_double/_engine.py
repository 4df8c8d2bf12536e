"""What a W&B server answers an agent's heartbeat, decided by the real ``sweeps`` engine.

W&B runs the same open-source engine server-side: ``sweeps.next_run`` proposes
the next run from the sweep config and its runs, ``sweeps.stop_runs`` picks runs
for early termination (hyperband).  The double calls exactly those, so the
proposals a test sees are the ones a real sweep would make.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

with warnings.catch_warnings():
    # sweeps 0.3 still spells a pydantic v1 config key; its UserWarning is noise here
    warnings.simplefilter("ignore", UserWarning)
    from sweeps.run import SweepRun, next_run, stop_runs

from ._mutations import new_sweep_run
from ._store import TERMINAL_STATES, Agent, Run, Sweep, plain

if TYPE_CHECKING:
    from ._double import WandbDouble


def sweep_runs(double: WandbDouble, sweep: Sweep) -> list[Run]:
    return [double._runs[n] for n in double._sweep_run_names(sweep)]


def engine_runs(runs: list[Run]) -> list[SweepRun]:
    """The runs as the engine sees them on W&B (config, summary, sampled history)."""
    return [
        SweepRun(
            name=r.name,
            state=r.state,
            config=r.config,
            summaryMetrics=r.summary,
            history=r.history,
            shouldStop=r.should_stop,
            stopped=r.state == "killed",
            exitcode=r.exitcode,
            running=r.state == "running",
        )
        for r in runs
    ]


def heartbeat_commands(
    double: WandbDouble, agent: Agent, run_state: dict[str, Any]
) -> list[dict[str, Any]]:
    """The ``commands`` for one heartbeat (called with the double's lock held).

    ``run_state`` is ``{run_id: true}`` for each run process the agent still has.
    """
    now = time.time()
    agent.heartbeat_at = now
    agent.heartbeats += 1
    sweep = double._sweeps[agent.sweep]
    sweep.heartbeat_at = now
    alive = {rid for rid, up in (run_state or {}).items() if up}
    for rid in alive:
        if rid in double._runs:
            double._runs[rid].heartbeat_at = now
    for rid in agent.runs:
        run = double._runs.get(rid)
        if run is not None and rid not in alive and run.state not in TERMINAL_STATES:
            # the agent's process for this run is gone without the run saying it is
            # done; a later file_stream "complete" may still correct this
            if run.should_stop:
                run.state = "killed"
            else:
                run.state = "preempted" if run.preempting else "crashed"

    early_terminate(double, sweep)

    commands: list[dict[str, Any]] = []
    for rid in sorted(alive):
        run = double._runs.get(rid)
        if run is None or not run.should_stop:
            continue
        if double.repeat_stop or run.stop_sent == 0:
            commands.append({"type": "stop", "run_id": rid})
            run.stop_sent += 1
    if not alive:
        command = next_command(double, sweep, agent)
        if command is not None:
            commands.append(command)
    return commands


def early_terminate(double: WandbDouble, sweep: Sweep) -> None:
    """Apply ``sweeps.stop_runs`` when the sweep config asks for early termination."""
    config = sweep.config
    if not config.get("early_terminate") or sweep.state not in ("RUNNING", "PAUSED"):
        return
    runs = sweep_runs(double, sweep)
    if not any(r.state == "running" for r in runs):
        return
    try:
        to_stop = stop_runs(config, engine_runs(runs))
    except Exception as exc:  # a config the engine rejects: record, do not crash
        sweep.error = f"sweeps.stop_runs: {exc!r}"
        double.errors.append(f"sweep {sweep.name}: {sweep.error}")
        return
    for proposal in to_stop:
        run = double._runs.get(str(proposal.name))
        if run is not None and run.state not in TERMINAL_STATES:
            run.should_stop = True


def next_command(double: WandbDouble, sweep: Sweep, agent: Agent) -> dict[str, Any] | None:
    """For an idle agent: a new run, ``exit`` when nothing is left, ``None`` to wait."""
    if sweep.state == "PAUSED":
        return None
    if sweep.state != "RUNNING":
        return {"type": "exit"}
    config = sweep.config
    runs = sweep_runs(double, sweep)
    requeued = next((r for r in runs if r.state == "preempted"), None)
    if requeued is not None:
        return requeue(requeued, agent, config)
    cap = config.get("run_cap")
    proposal = None
    if not (isinstance(cap, int) and len(runs) >= cap):
        try:
            proposal = next_run(config, engine_runs(runs))
        except Exception as exc:
            sweep.error = f"sweeps.next_run: {exc!r}"
            double.errors.append(f"sweep {sweep.name}: {sweep.error}")
            return {"type": "exit"}
    if proposal is None:
        if all(r.state in TERMINAL_STATES for r in runs):
            sweep.state = "FINISHED"
            sweep.updated_at = time.time()
        return {"type": "exit"}
    run = new_sweep_run(double, sweep, agent, plain(proposal.config))
    return {
        "type": "run",
        "run_id": run.name,
        "program": config.get("program"),
        "args": run.config,
    }


def requeue(run: Run, agent: Agent, config: dict[str, Any]) -> dict[str, Any]:
    """Hand a preempted run out again, same id, same params.

    W&B's docs say a run that called ``mark_preempting()`` and then exited
    non-zero is requeued, and another agent resumes it under the same run id.
    How the server hands it back is not observable here; this double sends it
    as a ``run`` command, before any new run, to the next idle agent.
    """
    run.state = "pending"
    run.preempting = run.completed = run.should_stop = False
    run.stop_sent = 0
    run.exitcode = None
    run.agent = agent.gql_id
    agent.runs.append(run.name)
    return {
        "type": "run",
        "run_id": run.name,
        "program": config.get("program"),
        "args": run.sweep_args,
    }
