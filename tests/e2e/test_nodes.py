"""Every node runs the sweep from its own clone: plain `wandb agent`, relative sweep files,
the user's own accelerate config.

Each node is a directory holding a copy of the same repository; the sweep is created in
one of them. Real `wandb agent` (against the W&B test double), real `accelerate launch`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, TEST_SWEEPS, rank_records, wbsweep
from wandb_double import WandbDouble

# Tiny models train on one torch thread here and in every rank (tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

SWEEP_FILE = "tests/sweeps/record_ranks.py"


def clone(root: Path, name: str) -> Path:
    """A copy of what the test sweep file needs, as a node's clone of the repository."""
    node = root / name
    (node / "tests" / "sweeps").mkdir(parents=True)
    (node / "sweeps").mkdir()
    shutil.copy(TEST_SWEEPS / "record_ranks.py", node / SWEEP_FILE)
    shutil.copy(REPO / "sweeps" / "tiny.py", node / "sweeps" / "tiny.py")
    return node


def in_dir(directory: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        return wbsweep(*args, **env)
    finally:
        os.chdir(cwd)


def test_plain_wandb_agent_on_another_clone_runs_the_trial_with_the_users_accelerate_config(
    wandb_double: WandbDouble, tmp_path: Path
) -> None:
    repo, node = clone(tmp_path, "repo"), clone(tmp_path, "node")
    created = in_dir(
        repo, "create", SWEEP_FILE, "--backend", "wandb", "--project", "proj", "--json",
        "--n-trials", "1", "--mixed-precision", "bf16", "--", "--dynamo_mode", "max-autotune",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    path = json.loads(created.stdout)["sweep_id"]
    sweep = wandb_double.sweep(path.split("/")[-1])
    assert sweep["config"]["program"] == SWEEP_FILE  # relative, as W&B's program is

    # The node's own `accelerate config`, where accelerate keeps its default.
    hf_home = tmp_path / "hf"
    (hf_home / "accelerate").mkdir(parents=True)
    (hf_home / "accelerate" / "default_config.yaml").write_text(
        yaml.safe_dump(
            {"compute_environment": "LOCAL_MACHINE", "mixed_precision": "no", "debug": True}
        )
    )
    record = tmp_path / "records"
    record.mkdir()
    env = wandb_double.child_env(
        {
            "HF_HOME": str(hf_home),
            "WBSWEEP_TEST_RECORD_DIR": str(record),
            "CUDA_VISIBLE_DEVICES": "",
        }
    )
    for name in ("WBSWEEP_ACCELERATE_CONFIG", "ACCELERATE_USE_CPU"):
        env.pop(name, None)
    # As a user with the project's environment active: `python` is its interpreter.
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    agent = subprocess.run(
        [os.path.join(bin_dir, "wandb"), "agent", "--count", "1", path],
        cwd=node, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert agent.returncode == 0, agent.stdout + agent.stderr
    (run,) = wandb_double.runs(path.split("/")[-1])
    assert run["state"] == "finished", agent.stdout + agent.stderr
    assert isinstance(run["summary"].get("objective"), float)
    (begin,) = [r for r in rank_records(record) if r["event"] == "train_begin"]
    # Seen inside the trial: the sweep's recorded precision, over the node's "no"...
    assert begin["mixed_precision"] == "bf16"
    assert begin["accelerate_debug"] == "true"  # ...and the node's other settings kept
    assert begin["dynamo_mode"] == "max-autotune"  # the accelerate flag recorded at create
    assert begin["cwd"] == str(node)  # the node's clone, not the one the sweep came from
    assert (node / "outputs" / "record_ranks" / f"run-{run['id']}").is_dir()


def test_a_node_without_the_sweep_file_says_where_it_looked_and_sweep_file_fixes_it(
    tmp_path: Path,
) -> None:
    repo = clone(tmp_path, "repo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = str(tmp_path / "store.db")
    created = in_dir(repo, "create", SWEEP_FILE, "--store", store, "--json", "--n-trials", "2")
    assert created.returncode == 0, created.stderr
    sweep_id = json.loads(created.stdout)["sweep_id"]

    lost = in_dir(elsewhere, "agent", sweep_id, "--store", store, "--max-consecutive-failures", "1")
    assert lost.returncode == 9, lost.stdout + lost.stderr
    shown = json.loads(in_dir(elsewhere, "status", sweep_id, "--store", store, "--json").stdout)
    (failed,) = shown["runs"]
    assert failed["state"] == "failed"
    assert "sweep file not found" in failed["reason"] and str(elsewhere) in failed["reason"]
    assert "Traceback" not in failed["reason"]

    found = in_dir(
        elsewhere, "agent", sweep_id, "--store", store, "--sweep-file", str(repo / SWEEP_FILE)
    )
    assert found.returncode == 0, found.stdout + found.stderr
    shown = json.loads(in_dir(elsewhere, "status", sweep_id, "--store", store, "--json").stdout)
    assert sorted(r["state"] for r in shown["runs"]) == ["failed", "finished"]
