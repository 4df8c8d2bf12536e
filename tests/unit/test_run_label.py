"""How a trial's W&B run reads on the dashboard: its name, tags and group.

The local store numbers a sweep's runs; a cold or warm trial's rank 0 reads
its label through the environment a local worker gives it; ``hp_name(trial)``
names the run instead when the sweep file has one. The last test opens a real
offline W&B run (the real SDK, no server) to see what the run itself holds.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from helpers import SWEEPS, invoke_create

from wbsweep.backends import trial_label
from wbsweep.backends.local import LocalBackend
from wbsweep.backends.records import RunLabel
from wbsweep.sweepfile import load_sweep_file
from wbsweep.trial import run_settings
from wbsweep.wandb_run import RunSettings, TrialRun


def claimed(sweep_id: str, worker: str, n: int) -> list[str]:
    store = LocalBackend()
    ids = []
    for _ in range(n):
        run = store.claim_next(sweep_id, worker)
        assert run is not None
        ids.append(run.id)
    return ids


def test_local_runs_are_numbered_in_their_sweep_and_grouped_under_its_name() -> None:
    named = invoke_create(SWEEPS / "tiny.py", "--backend", "local", "--name", "lr-search")
    first, second = claimed(named, "node1-w0", 2)
    store = LocalBackend()
    assert store.run_label(named, first) == RunLabel(
        "lr-search-1", ("local", "node1-w0"), "lr-search"
    )
    assert store.run_label(named, second).name == "lr-search-2"
    # Without a name, the sweep is called by its id, as W&B shows an unnamed sweep.
    bare = invoke_create(SWEEPS / "tiny.py", "--backend", "local")
    (run_id,) = claimed(bare, "node2-w1", 1)
    assert store.run_label(bare, run_id) == RunLabel(f"{bare}-1", ("local", "node2-w1"), bare)


def test_rank_0_of_a_local_worker_s_trial_reads_its_label_and_hp_name_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep_id = invoke_create(SWEEPS / "tiny.py", "--backend", "local", "--name", "s")
    _, run_id = claimed(sweep_id, "w", 2)
    store = LocalBackend()
    for key, value in store.trial_env(sweep_id, run_id).items():  # what a local worker sets
        monkeypatch.setenv(key, value)
    assert trial_label() == RunLabel("s-2", ("local", "w"), "s")
    sweep = load_sweep_file(SWEEPS / "tiny.py")
    settings = run_settings(sweep, {"learning_rate": 0.01})
    assert (settings.name, settings.tags, settings.group) == ("s-2", ("local", "w"), "s")

    with_name = tmp_path / "named.py"
    with_name.write_text(
        (SWEEPS / "tiny.py").read_text()
        + "\n\ndef hp_name(trial):\n    return f\"lr={trial['learning_rate']}\"\n"
    )
    settings = run_settings(load_sweep_file(with_name), {"learning_rate": 0.01})
    assert (settings.name, settings.tags) == ("lr=0.01", ("local", "w"))
    # Ranks other than 0 open no run, so they ask for no label.
    monkeypatch.setenv("RANK", "1")
    assert run_settings(sweep, {}) == RunSettings()


def test_no_label_without_a_sweep_to_ask() -> None:
    assert trial_label({}) is None
    assert trial_label({"WANDB_RUN_ID": "abc"}) is None
    # A W&B sweep's trial with W&B unreachable or not logged in keeps W&B's own name.
    assert trial_label({"WANDB_RUN_ID": "abc", "WANDB_SWEEP_ID": "xyz"}) is None
    assert RunSettings(group="g").labelled(None) == RunSettings(group="g")


def test_the_offline_run_holds_its_name_tags_group_and_config(tmp_path: Path) -> None:
    label = RunLabel("s-3", ("local", socket.gethostname()), "s")
    settings = RunSettings(mode="offline").labelled(label)
    run = TrialRun.open(
        settings, run_id="lbl00001", config={"learning_rate": 0.01}, metric="m", goal="minimize"
    )
    assert run is not None
    try:
        assert (run.run.name, tuple(run.run.tags), run.run.group) == ("s-3", label.tags, "s")
        assert run.run.config["learning_rate"] == 0.01
    finally:
        run.finish(0)
    assert len(list((tmp_path / "wandb").glob("offline-run-*-lbl00001"))) == 1
