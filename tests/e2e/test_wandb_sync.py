"""`wbsweep sync`: a real local sweep's offline runs, uploaded by the real `wandb sync`.

No W&B server is reachable here: the upload goes to the W&B protocol test
double in `tests/wandb_double/` (real `wandb` SDK, real HTTP), and the test
reads what it holds. Nothing in wbsweep or the SDK is mocked. Slow: two real
1-rank `accelerate launch` trials of `sweeps/tiny.py`, then two syncs.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SWEEPS, invoke_create, invoke_status, sweep_with_results, wbsweep
from wandb_double import WandbDouble

from wbsweep.backends.local import LocalBackend

# Tiny models train on one torch thread here and in every rank (tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def test_a_local_sweep_syncs_into_one_wandb_sweep_once(
    wandb_double: WandbDouble, tmp_path: Path
) -> None:
    # The trials run offline, as on a machine with no W&B login.
    offline = {"WANDB_MODE": "offline"}
    # Created in this process: what is checked is what the agent's trials and `sync` do.
    sweep_id = invoke_create(
        SWEEPS / "tiny.py", "--backend", "local", "--n-trials", "2", "--name", "tiny-sync"
    )
    # One trial, then a sync while the sweep still runs: its W&B sweep is paused.
    result = wbsweep("agent", sweep_id, "--count", "1", timeout=600, **offline)
    assert result.returncode == 0, result.stdout + result.stderr
    first = wbsweep("sync", sweep_id, "--project", "synced")
    assert first.returncode == 0, first.stdout + first.stderr
    (sweep,) = wandb_double.sweeps()
    path = f"{wandb_double.entity}/synced/{sweep['id']}"
    assert f"to W&B sweep {path}: 1 run(s), 1 uploaded now" in first.stdout
    assert f"/{wandb_double.entity}/synced/sweeps/{sweep['id']}" in first.stdout
    assert sweep["state"] == "PAUSED" and len(sweep["runs"]) == 1

    # The second trial, then a sync: it joins the same W&B sweep, which is finished now.
    result = wbsweep("agent", sweep_id, timeout=600, **offline)
    assert result.returncode == 0, result.stdout + result.stderr
    local = invoke_status(sweep_id)
    runs = {run["id"]: run for run in local["runs"]}
    assert [run["state"] for run in runs.values()] == ["finished", "finished"]
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 2
    synced = wbsweep("sync", sweep_id, "--project", "synced")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert f"to W&B sweep {path}: 2 run(s), 1 uploaded now" in synced.stdout
    (sweep,) = wandb_double.sweeps()
    assert sweep["state"] == "FINISHED"  # the local sweep is over: no W&B agent starts it

    uploaded = wandb_double.runs()
    assert sorted(run["id"] for run in uploaded) == sorted(runs)
    by_number = sorted(uploaded, key=lambda run: run["display_name"])
    # Named for the sweep and the trial's number, grouped under the sweep's name, tagged
    # with the backend and the worker that ran it.
    assert [run["display_name"] for run in by_number] == ["tiny-sync-1", "tiny-sync-2"]
    for run in uploaded:
        assert run["project"] == "synced" and run["entity"] == wandb_double.entity
        assert run["state"] == "finished"
        assert run["group"] == "tiny-sync"
        assert run["tags"] == ["local", f"{socket.gethostname()}-w0"]
        mine = runs[run["id"]]
        for name, value in mine["params"].items():
            assert run["config"][name] == pytest.approx(value)
        # The effective TrainingArguments are in the config too.
        assert run["config"]["output_dir"].endswith(f"run-{run['id']}")
        assert run["config"]["num_train_epochs"] == 2
        assert run["summary"]["eval_loss"] == pytest.approx(mine["objective"])
        # They belong to the W&B sweep, whose config is the local sweep's.
        assert run["sweep"] == sweep["id"]
    local_config = LocalBackend().sweep(sweep_id).config
    for key in ("method", "metric", "parameters", "command", "run_cap", "name"):
        assert sweep["config"][key] == local_config[key], key

    # Again: nothing is uploaded twice and no second sweep is made.
    uploads = wandb_double.operations().count("UpsertBucket")
    again = wbsweep("sync", sweep_id, "--project", "synced")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"to W&B sweep {path}: 2 run(s), 0 uploaded now" in again.stdout
    assert len(wandb_double.sweeps()) == 1 and len(wandb_double.runs()) == 2
    assert wandb_double.operations().count("UpsertBucket") == uploads
    for output in (first.stdout, first.stderr, synced.stdout, synced.stderr, again.stdout):
        assert wandb_double.api_key not in output
    # To another project: `wandb sync` uploads a run once, so it says where they are not.
    other = wbsweep("sync", sweep_id, "--project", "other")
    assert other.returncode == 10, other.stdout + other.stderr
    (line,) = other.stderr.strip().splitlines()
    assert f"were uploaded before, not to {wandb_double.entity}/other" in line
    assert len(wandb_double.sweeps()) == 1


OLD_STYLE_RUN = """
import wandb

run = wandb.init(project="local", config={"learning_rate": 0.001})
run.summary["eval_loss"] = 0.5
run.finish()
"""


def test_a_run_that_names_a_sweep_w_and_b_does_not_know_is_refused_in_one_line(
    wandb_double: WandbDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WBSWEEP_BACKEND", "local")
    # An offline run that recorded the local sweep's id as its W&B sweep (what trials of
    # earlier wbsweep releases did): W&B answers 404 and does not take it.
    sweep_id, runs = sweep_with_results([0.5])
    env = wandb_double.child_env(
        {"WANDB_MODE": "offline", "WANDB_RUN_ID": runs[0]["id"], "WANDB_SWEEP_ID": sweep_id}
    )
    made = subprocess.run(
        [sys.executable, "-c", OLD_STYLE_RUN], env=env, capture_output=True, text=True, timeout=120
    )
    assert made.returncode == 0, made.stderr
    (folder,) = (tmp_path / "wandb").glob("offline-run-*")

    result = wbsweep("sync", sweep_id, "--project", "synced")
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: W&B did not take run(s) " + runs[0]["id"])
    assert wandb_double.runs() == [] and wandb_double.sweeps() == []
    assert not list(folder.glob("*.synced"))  # a later sync tries it again
