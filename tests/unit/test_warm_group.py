"""Warm workers, the fast parts: the group's command, the worker's handling of its ranks.

The ranks here are ``tests/sweeps/fake_warm_group.py``, a test double that speaks
the worker's protocol with no training (the real 2-rank group, with real
trials, is ``tests/e2e/test_warm.py``): it shows in a second what the worker
does when a rank fails, hangs or dies.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from helpers import SWEEPS, TEST_SWEEPS, invoke, invoke_create

from wbsweep import warm
from wbsweep.backends.local import LocalBackend
from wbsweep.errors import EXIT_BAD_INPUT, UsageError
from wbsweep.sweepfile import load_sweep_file
from wbsweep.training import SweepFileTrainer
from wbsweep.warm import WarmGroup, group_command

FAKE = TEST_SWEEPS / "fake_warm_group.py"


def _config(*create_args: str) -> dict:
    sweep_id = invoke_create(SWEEPS / "tiny.py", *create_args)
    return LocalBackend().sweep(sweep_id).config


def test_the_group_runs_the_sweeps_trial_module_in_its_recorded_shape(tmp_path: Path) -> None:
    config = _config("--processes-per-trial", "2", "--", "--dynamo_backend", "no")
    argv, env, ranks = group_command(config, {}, str(SWEEPS.parent), tmp_path / "scratch")
    assert ranks == 2
    module = argv.index("-m", argv.index("launch"))
    assert argv[module + 1 : module + 3] == ["wbsweep.warm_rank", str(SWEEPS / "tiny.py")]
    assert argv[module + 3 :] == ["--metric", "eval_loss", "--goal", "minimize"]
    assert "--dynamo_backend" in argv[:module]  # the recorded accelerate flags
    # No agent wrote a config: one in the recorded shape, on CPU here.
    written = yaml.safe_load((tmp_path / "scratch" / "accelerate.yaml").read_text())
    assert (written["num_processes"], written["use_cpu"]) == (2, True)
    assert env["ACCELERATE_USE_CPU"] == "true"


def test_a_node_without_the_sweep_file_is_one_line_and_a_hand_written_command_runs_cold(
    tmp_path: Path,
) -> None:
    config = _config()
    command = ["elsewhere/tiny.py" if t.endswith("tiny.py") else t for t in config["command"]]
    with pytest.raises(UsageError, match="sweep file not found: looked for 'elsewhere/tiny.py'"):
        group_command({**config, "command": command}, {}, str(tmp_path), tmp_path)
    plain = {**config, "command": ["${env}", "${interpreter}", "${program}", "${args}"]}
    assert group_command(plain, {}, str(tmp_path), tmp_path) is None


def test_the_datasets_are_built_once_unless_they_take_the_trials_params(tmp_path: Path) -> None:
    path = tmp_path / "counting.py"
    path.write_text(
        "CALLS = []\n"
        "def model_init(trial): return None\n"
        "def training_args(): return None\n"
        "def datasets(): CALLS.append(1); return ([1], [2])\n"
    )
    sweep = load_sweep_file(path)
    kept = SweepFileTrainer(sweep, reuse_datasets=True)
    assert kept.datasets({}) is kept.datasets({"learning_rate": 0.1})
    assert sys.modules[f"{sweep.model_init.__module__}"].CALLS == [1]
    path.write_text(
        "def model_init(trial): return None\n"
        "def training_args(): return None\n"
        "def datasets(trial): return ([trial['max_length']], [])\n"
    )
    per_trial = SweepFileTrainer(load_sweep_file(path), reuse_datasets=True)
    assert per_trial.datasets({"max_length": 32})[0] == [32]
    assert per_trial.datasets({"max_length": 64})[0] == [64]


def _group(tmp_path: Path, ranks: int = 2) -> WarmGroup:
    return WarmGroup(
        [sys.executable, str(FAKE), str(ranks)], {"PATH": "/usr/bin:/bin"},
        ranks=ranks, log_path=tmp_path / "group.log", kill_delay=2,
    )  # fmt: skip


def _run(group: WarmGroup, run_id: str, **params: int):  # noqa: ANN202
    return group.run(run_id, params, env={}, log=str(Path(group.log_path).parent / f"{run_id}.log"),
                     should_stop=lambda: False, stopping=lambda: False)  # fmt: skip


def test_a_failing_rank_fails_its_run_and_the_group_goes_on(tmp_path: Path) -> None:
    group = _group(tmp_path)
    group.start()
    try:
        assert _run(group, "a").exit_code == 0
        failed = _run(group, "b", fail=1)
        assert (failed.exit_code, failed.reason) == (1, "rank 1 refuses")
        assert _run(group, "c").exit_code == 0
        assert group.starts == 1  # one group for all three
    finally:
        group.close()
    assert not group.alive


def test_a_rank_left_in_a_collective_restarts_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warm, "BROKEN_GRACE", 0.5)
    group = _group(tmp_path)
    group.start()
    try:
        # Rank 1 fails; rank 0 never ends (it waits in a collective for rank 1).
        stuck = _run(group, "a", fail=1, hang=0)
        assert (stuck.exit_code, stuck.reason) == (1, "rank 1 refuses")
        assert not group.alive  # stopped as a whole
        assert _run(group, "b").exit_code == 0
        assert group.starts == 2  # the next run got a fresh group
    finally:
        group.close()


def test_a_rank_that_dies_ends_the_run_and_the_next_gets_a_fresh_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warm, "LOST_GRACE", 2.0)
    group = _group(tmp_path)
    group.start()
    try:
        lost = _run(group, "a", die=1)
        assert lost.exit_code == 7 and "the warm group ended (exit 7)" in (lost.reason or "")
        assert _run(group, "b").exit_code == 0
        assert group.starts == 2
    finally:
        group.close()


def test_warm_runs_on_one_node_only() -> None:
    result = invoke("agent", "abc", "--warm", "--nodes", "2", "--main-host", "127.0.0.1")
    assert result.exit_code == EXIT_BAD_INPUT
    assert "--warm runs each trial on one node" in result.stderr


def test_a_local_warm_worker_is_the_local_worker_with_warm(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "s.db")
    assert store.worker_argv("abc", "w0", warm=True)[-1] == "--warm"
    assert "--warm" not in store.worker_argv("abc", "w0")
