"""The real ``wandb`` CLI and ``wandb agent`` processes against the W&B test double.

Every test here drives real SDK code (``wandb.sweep``, the ``wandb agent`` CLI
process and its ``wandb.init`` children, ``wandb.Api()``) against the double,
so a change in what the SDK sends shows up as a failure here first, not as a
puzzling failure in a wbsweep test. Slow: each starts SDK processes. The
double's fast tests are ``tests/unit/test_wandb_double.py``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import wandb
from helpers import ENTITY, PROJECT, sweep_config, wait_for
from wandb_double import WandbDouble

pytestmark = pytest.mark.slow

WANDB_CLI = str(Path(sys.executable).parent / "wandb")

TRAIN = textwrap.dedent(
    """
    import os, signal, sys, time
    import wandb

    def on_term(signum, frame):
        with open(os.environ["TRAIN_SIGNALS"], "a") as fp:
            fp.write(f"SIGTERM {os.environ.get('WANDB_RUN_ID')}\\n")
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    run = wandb.init()
    x = run.config["x"]
    if os.environ.get("TRAIN_FAIL_AT") == str(x):
        sys.exit(3)
    for step in range(int(os.environ.get("TRAIN_STEPS", "1"))):
        wandb.log({"objective": (x - 2) ** 2})
        time.sleep(float(os.environ.get("TRAIN_SLEEP", "0")))
    run.finish()
    """
)


@pytest.fixture
def train(tmp_path: Path) -> Path:
    """``train.py`` in the working directory (the agent runs ``program`` from there)."""
    path = tmp_path / "train.py"
    path.write_text(TRAIN)
    return path


def agent(
    double: WandbDouble, sweep_id: str, *args: str, tmp_path: Path, timeout: float = 120, **env: str
) -> subprocess.Popen[str]:
    """Start the real ``wandb agent`` CLI on ``sweep_id``."""
    return subprocess.Popen(
        [WANDB_CLI, "agent", *args, f"{ENTITY}/{PROJECT}/{sweep_id}"],
        env=double.child_env(
            {"WANDB_DIR": str(tmp_path), "TRAIN_SIGNALS": str(tmp_path / "signals.txt"), **env}
        ),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"wandb agent did not exit:\n{out[-4000:]}") from None
    assert proc.returncode == 0, out[-4000:]
    return out


# ------------------------------------------------------------------ real SDK, in process


def test_wandb_sweep_registers_and_state_changes(wandb_double: WandbDouble) -> None:
    config = sweep_config([1, 2, 3], run_cap=2)
    sweep_id = wandb.sweep(config, project=PROJECT, entity=ENTITY)

    stored = wandb_double.sweep(sweep_id)
    assert len(sweep_id) == 8
    assert (stored["entity"], stored["project"], stored["state"]) == (ENTITY, PROJECT, "RUNNING")
    assert stored["config"] == config
    assert "UpsertSweep" in wandb_double.operations()

    api_sweep = wandb.Api().sweep(f"{ENTITY}/{PROJECT}/{sweep_id}")
    assert (api_sweep.id, api_sweep.state, api_sweep.config) == (sweep_id, "RUNNING", config)
    assert api_sweep.expected_run_count == 2
    assert list(api_sweep.runs) == []
    assert api_sweep.best_run() is None

    # the CLI changes state by the sweep's GraphQL id through UpsertSweep
    for flag, state in (("--pause", "PAUSED"), ("--resume", "RUNNING"), ("--cancel", "CANCELED")):
        result = subprocess.run(
            [WANDB_CLI, "sweep", flag, f"{ENTITY}/{PROJECT}/{sweep_id}"],
            env=wandb_double.child_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert wandb_double.sweep(sweep_id)["state"] == state
    assert wandb_double.api_keys_seen == {wandb_double.api_key}
    assert wandb_double.unknown == [] and wandb_double.errors == []


# ------------------------------------------------------------------ real wandb agent process


def test_agent_runs_trials_and_api_reads_them_then_exits_when_nothing_is_left(
    wandb_double: WandbDouble, train: Path, tmp_path: Path
) -> None:
    """``--count 2`` runs 2 of a 3-point grid and ``wandb.Api()`` reads them; then an agent
    with no ``--count`` runs until the double answers ``exit`` (grid done), its run failed."""
    sweep_id = wandb.sweep(sweep_config([1, 2, 3]), project=PROJECT, entity=ENTITY)
    finish(agent(wandb_double, sweep_id, "--count", "2", tmp_path=tmp_path))

    runs = wandb_double.runs(sweep_id)
    assert [r["config"] for r in runs] == [{"x": 1}, {"x": 2}]
    for run in runs:
        assert run["state"] == "finished"
        assert run["exitcode"] == 0
        assert run["summary"]["objective"] == (run["config"]["x"] - 2) ** 2
        assert [row["objective"] for row in run["history"]] == [run["summary"]["objective"]]
        assert run["agent"] == wandb_double.agents()[0]["id"]
        assert "wandb-summary.json" in run["files"]
    ops = set(wandb_double.operations())
    assert {
        "Viewer",
        "UpsertSweep",
        "SweepWithRuns",
        "CreateAgent",
        "Heartbeat",
        "UpsertBucket",
        "CreateRunFiles",
    } <= ops
    assert any(op.endswith("/file_stream") for op in ops)

    api = wandb.Api()
    api_sweep = api.sweep(f"{ENTITY}/{PROJECT}/{sweep_id}")
    assert sorted(r.id for r in api_sweep.runs) == sorted(r["id"] for r in runs)
    best = api_sweep.best_run(order="+summary_metrics.objective")
    assert (best.config["x"], best.summary["objective"], best.state) == (2, 0, "finished")
    assert api_sweep.best_run(order="-summary_metrics.objective").config["x"] == 1
    assert api_sweep.best_run().config["x"] == 2  # the sweep's metric, minimized

    paged = api.runs(
        f"{ENTITY}/{PROJECT}", filters={"sweep": sweep_id}, per_page=1, order="+created_at"
    )
    assert [r.id for r in paged] == [r["id"] for r in runs]
    assert len(paged) == 2
    cursors = [
        v.get("cursor") for op, v in wandb_double.requests if op == "Runs" and v.get("perPage") == 1
    ]
    assert cursors[0] is None and len(set(cursors)) >= 2  # really paged
    finished = api.runs(
        f"{ENTITY}/{PROJECT}", filters={"$and": [{"sweep": sweep_id}, {"state": "finished"}]}
    )
    assert len(finished) == 2
    assert len(api.runs(f"{ENTITY}/{PROJECT}", filters={"state": "running"})) == 0
    assert wandb_double.unknown == [] and wandb_double.errors == []
    assert wandb_double.api_keys_seen == {wandb_double.api_key}

    # No `--count`: the agent runs the grid's last point, which fails, and leaves.
    finish(agent(wandb_double, sweep_id, tmp_path=tmp_path, TRAIN_FAIL_AT="3"))
    runs = wandb_double.runs(sweep_id)
    assert [(r["config"]["x"], r["state"], r["exitcode"]) for r in runs] == [
        (1, "finished", 0),
        (2, "finished", 0),
        (3, "failed", 3),
    ]
    assert wandb_double.sweep(sweep_id)["state"] == "FINISHED"


def test_stop_run_sigterms_the_child_and_the_run_is_killed(
    wandb_double: WandbDouble, train: Path, tmp_path: Path
) -> None:
    sweep_id = wandb.sweep(sweep_config([1, 2]), project=PROJECT, entity=ENTITY)
    proc = agent(
        wandb_double,
        sweep_id,
        "--count",
        "1",
        tmp_path=tmp_path,
        TRAIN_STEPS="600",
        TRAIN_SLEEP="0.1",
    )
    try:
        run = wandb_double.wait_for_run(states={"running"}, sweep_id=sweep_id, timeout=60)
        # Stopped once it has logged, so the run keeps what it reported.
        wait_for(lambda: wandb_double.run(run["id"])["history"], 60, "the run's first rows")
        wandb_double.stop_run(run["id"])
        wandb_double.wait_for_run(states={"killed"}, sweep_id=sweep_id, timeout=60)
        # the agent would notice at its next poll and exit (--count 1); spare the wait
        proc.terminate()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (tmp_path / "signals.txt").read_text() == f"SIGTERM {run['id']}\n"
    stopped = wandb_double.run(run["id"])
    assert (stopped["state"], stopped["stopped"]) == ("killed", True)
    assert 0 < len(stopped["history"]) < 600
    stops = [c for _, c in wandb_double.commands if c["type"] == "stop"]
    assert stops and all(c == {"type": "stop", "run_id": run["id"]} for c in stops)
    assert wandb_double.errors == []


@pytest.mark.slow
def test_hyperband_stops_a_bad_run(wandb_double: WandbDouble, train: Path, tmp_path: Path) -> None:
    """``sweeps.stop_runs`` (hyperband) picks the worst run; the agent SIGTERMs it."""
    config = sweep_config([2, 3, 6], early_terminate={"type": "hyperband", "min_iter": 2, "eta": 2})
    sweep_id = wandb.sweep(config, project=PROJECT, entity=ENTITY)
    finish(
        agent(
            wandb_double,
            sweep_id,
            "--count",
            "3",
            tmp_path=tmp_path,
            TRAIN_STEPS="24",
            TRAIN_SLEEP="0.15",
        ),
        timeout=180,
    )
    states = {r["config"]["x"]: r["state"] for r in wandb_double.runs(sweep_id)}
    assert states == {2: "finished", 3: "finished", 6: "killed"}
