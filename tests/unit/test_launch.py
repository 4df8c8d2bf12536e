"""A node's trial settings: the user's accelerate config kept, the sweep file found on the node."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import invoke

from wbsweep.errors import EXIT_BAD_INPUT, UsageError
from wbsweep.launch import resolve_sweep_file
from wbsweep.slots import (
    SWEEP_FILE_ENV,
    WorkerSlot,
    user_accelerate_config,
    write_accelerate_configs,
)

FSDP = {
    "compute_environment": "LOCAL_MACHINE",
    "distributed_type": "FSDP",
    "mixed_precision": "bf16",
    "num_processes": 8,
    "gpu_ids": "0,1,2,3,4,5,6,7",
    "main_process_port": 1234,
    "fsdp_config": {
        "fsdp_version": 2,
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_state_dict_type": "SHARDED_STATE_DICT",
    },
    "dynamo_config": {"dynamo_backend": "INDUCTOR"},
}
DEEPSPEED = {
    "distributed_type": "DEEPSPEED",
    "deepspeed_config": {"zero_stage": 3, "offload_optimizer_device": "cpu"},
    "mixed_precision": "fp16",
}


@pytest.mark.parametrize("user", [FSDP, DEEPSPEED], ids=["fsdp", "deepspeed"])
def test_each_workers_config_keeps_the_users_sections_and_sets_only_its_own(
    tmp_path: Path, user: dict
) -> None:
    slots = [WorkerSlot(0, ("0", "1"), 2, 29500), WorkerSlot(1, ("2", "3"), 2, 29501)]
    written = [
        yaml.safe_load(p.read_text()) for p in write_accelerate_configs(slots, tmp_path, user)
    ]
    owned = {"num_processes", "gpu_ids", "main_process_port", "num_machines", "machine_rank",
             "use_cpu", "rdzv_backend", "same_network"}  # fmt: skip
    for slot, config in zip(slots, written, strict=True):
        # Every setting of the user's not owned by the worker is there, unchanged.
        assert {k: v for k, v in config.items() if k not in owned} == {
            "compute_environment": "LOCAL_MACHINE",
            **{k: v for k, v in user.items() if k not in owned},
        }
        assert config["num_processes"] == 2 and config["main_process_port"] == slot.port
        assert config["gpu_ids"] == "all" and config["use_cpu"] is False


def test_a_plain_config_gets_the_launch_type_the_worker_needs(tmp_path: Path) -> None:
    slots = [WorkerSlot(0, (), 1, 1), WorkerSlot(1, (), 2, 2)]
    user = {"distributed_type": "MULTI_GPU", "mixed_precision": "bf16", "num_processes": 4}
    one, two = (
        yaml.safe_load(p.read_text()) for p in write_accelerate_configs(slots, tmp_path, user)
    )
    assert (one["distributed_type"], two["distributed_type"]) == ("NO", "MULTI_GPU")
    assert one["mixed_precision"] == two["mixed_precision"] == "bf16"
    assert one["use_cpu"] is True


def test_the_default_accelerate_config_is_read_where_accelerate_keeps_it(tmp_path: Path) -> None:
    env = {"HF_HOME": str(tmp_path)}
    assert user_accelerate_config(None, env) == {}  # none saved: accelerate's defaults
    (tmp_path / "accelerate").mkdir()
    (tmp_path / "accelerate" / "default_config.yaml").write_text("mixed_precision: bf16\n")
    assert user_accelerate_config(None, env) == {"mixed_precision": "bf16"}


def test_a_bad_accelerate_config_is_one_line_naming_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        user_accelerate_config(tmp_path / "missing.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(UsageError, match="list.yaml.*not a mapping"):
        user_accelerate_config(listed)
    result = invoke("agent", "nosuch", "--accelerate-config", str(tmp_path / "missing.yaml"))
    assert result.exit_code == EXIT_BAD_INPUT
    assert "missing.yaml" in result.output and "Traceback" not in result.output


def test_the_sweep_file_is_found_on_this_node_or_the_error_says_where_it_looked(
    tmp_path: Path,
) -> None:
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "s.py").write_text("")
    assert resolve_sweep_file("sweeps/s.py", {}, str(tmp_path)) == str(tmp_path / "sweeps/s.py")
    other = tmp_path / "other.py"
    other.write_text("")
    assert resolve_sweep_file("sweeps/s.py", {SWEEP_FILE_ENV: str(other)}, "/") == str(other)
    with pytest.raises(UsageError) as caught:
        resolve_sweep_file("sweeps/s.py", {}, "/nowhere")
    assert "'sweeps/s.py' in /nowhere" in str(caught.value)
    assert "--sweep-file" in str(caught.value)
