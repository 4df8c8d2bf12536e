"""The trial shape: fixed at ``create``, recorded in the sweep; every node runs it or says no."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import SWEEPS, invoke, invoke_create, invoke_status

from wbsweep.errors import UsageError
from wbsweep.launch import launch_argv, node_config
from wbsweep.shape import TrialShape, sweep_shape
from wbsweep.slots import shaped_slots


def recorded_shape(sweep_id: str) -> TrialShape:
    from wbsweep.backends.local import LocalBackend

    return sweep_shape(LocalBackend().sweep(sweep_id).config["command"])


def test_create_records_ranks_precision_and_accelerate_flags_and_status_shows_them(
    tmp_path: Path,
) -> None:
    sweep_id = invoke_create(
        SWEEPS / "tiny.py",
        "--gpus-per-trial", "2", "--mixed-precision", "bf16",
        "--", "--dynamo_backend", "inductor",
    )  # fmt: skip
    assert recorded_shape(sweep_id) == TrialShape(2, True, "bf16", ("--dynamo_backend", "inductor"))
    table = invoke("status", sweep_id)
    assert "2 GPUs per trial, bf16, accelerate --dynamo_backend inductor" in table.stdout
    shape = invoke_status(sweep_id)["trial_shape"]
    assert (shape["ranks"], shape["gpus"], shape["mixed_precision"]) == (2, True, "bf16")


def test_create_takes_mixed_precision_from_the_users_default_accelerate_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "hf" / "accelerate").mkdir(parents=True)
    (tmp_path / "hf" / "accelerate" / "default_config.yaml").write_text("mixed_precision: fp16\n")
    sweep_id = invoke_create(SWEEPS / "tiny.py", "--processes-per-trial", "2")
    assert recorded_shape(sweep_id) == TrialShape(2, False, "fp16")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--", "--num_processes", "4"], "--num_processes"),
        (["--", "--config_file=x.yaml"], "--config_file"),
        (["--gpus-per-trial", "2", "--processes-per-trial", "2"], "not both"),
        (["--processes-per-trial", "0"], "--processes-per-trial"),
    ],
)
def test_a_shape_wbsweep_owns_is_refused_in_one_line(
    tmp_path: Path, args: list[str], named: str
) -> None:
    result = invoke("create", str(SWEEPS / "tiny.py"), *args)
    assert result.exit_code != 0
    assert named in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / ".wbsweep" / "store.db").exists()


def test_every_gpu_node_runs_the_recorded_ranks_and_a_short_node_says_no() -> None:
    slots, overridden = shaped_slots(TrialShape(2, True), ["0", "1", "2", "3"])
    assert [slot.gpus for slot in slots] == [("0", "1"), ("2", "3")] and not overridden
    with pytest.raises(UsageError, match="2 GPUs, but this node sees 1"):
        shaped_slots(TrialShape(2, True), ["0"])
    with pytest.raises(UsageError, match="sees none"):
        shaped_slots(TrialShape(1, True), [])
    # On CPU a sweep made for any device runs its ranks as CPU processes.
    slots, overridden = shaped_slots(TrialShape(2), [])
    assert [slot.num_processes for slot in slots] == [2] and not overridden


def test_an_explicit_agent_flag_overrides_the_shape_and_says_so() -> None:
    slots, overridden = shaped_slots(TrialShape(2, True), ["0"], gpus_per_trial=1)
    assert [slot.gpus for slot in slots] == [("0",)] and overridden
    slots, overridden = shaped_slots(TrialShape(1, True), [], processes_per_trial=1)
    assert slots[0].num_processes == 1 and overridden
    # An old sweep with no recorded shape: the node's flags, as before, never "overridden".
    slots, overridden = shaped_slots(TrialShape(recorded=False), [], processes_per_trial=2)
    assert slots[0].num_processes == 2 and not overridden


def test_the_agent_refuses_a_gpu_sweep_on_a_cpu_node_in_one_line(tmp_path: Path) -> None:
    sweep_id = invoke_create(SWEEPS / "tiny.py", "--gpus-per-trial", "2")
    result = invoke("agent", sweep_id, CUDA_VISIBLE_DEVICES="")
    assert result.exit_code != 0
    assert "runs each trial on 2 GPU(s), but this node sees none" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert invoke_status(sweep_id)["runs"] == []


def test_a_plain_wandb_agent_node_builds_the_recorded_shape(tmp_path: Path) -> None:
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2", "HF_HOME": str(tmp_path)}
    config, gpus = node_config(env, TrialShape(2, True, "bf16"))
    assert gpus == ("0", "1")
    assert (config["num_processes"], config["mixed_precision"]) == (2, "bf16")
    assert config["distributed_type"] == "MULTI_GPU" and config["use_cpu"] is False
    with pytest.raises(UsageError, match="2 GPU\\(s\\), but this node sees 0"):
        node_config({"CUDA_VISIBLE_DEVICES": "", "HF_HOME": str(tmp_path)}, TrialShape(2, True))
    config, gpus = node_config({"CUDA_VISIBLE_DEVICES": "", "HF_HOME": str(tmp_path)}, None)
    assert (config["num_processes"], config["use_cpu"], gpus) == (1, True, ())


def test_recorded_accelerate_flags_go_to_accelerate_launch() -> None:
    argv = launch_argv("c.yaml", "s.py", ["p.json"], ("--dynamo_backend", "inductor"))
    assert argv[1:] == [
        "-m", "wbsweep.accelerate",
        "launch", "--config_file", "c.yaml", "--dynamo_backend", "inductor",
        "-m", "wbsweep.trial", "s.py", "p.json",
    ]  # fmt: skip


def test_dry_run_json_holds_the_shape_tokens(tmp_path: Path) -> None:
    result = invoke("create", str(SWEEPS / "tiny.py"), "--dry-run", "--json")
    command = json.loads(result.stdout)["command"]
    assert command[-7:-1] == ["--ranks-per-trial", "1", "--on", "any", "--mixed-precision", "no"]
