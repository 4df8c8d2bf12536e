"""Nodes of one trial: flags checked in one line, each node's accelerate settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SWEEPS, invoke, invoke_create

from wbsweep.nodes import NodeGroup


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--nodes", "2"], "--main-host"),
        (["--nodes", "2", "--node-rank", "2", "--main-host", "h"], "--node-rank"),
        (["--nodes", "2", "--main-host", "h", "--workers", "2"], "--workers"),
    ],
)
def test_bad_node_flags_are_one_line(tmp_path: Path, args: list[str], named: str) -> None:
    sweep_id = invoke_create(SWEEPS / "tiny.py")
    result = invoke("agent", sweep_id, *args)
    assert result.exit_code != 0 and named in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_each_node_keeps_its_config_and_takes_its_part_of_the_group() -> None:
    config = {"num_processes": 2, "distributed_type": "FSDP", "mixed_precision": "bf16"}
    part = NodeGroup(3, 2, "10.0.0.1", 29400).machine_settings(config)
    assert part["num_processes"] == 6  # accelerate counts the processes of every machine
    assert (part["num_machines"], part["machine_rank"]) == (3, 2)
    assert (part["main_process_ip"], part["main_process_port"]) == ("10.0.0.1", 29401)
    assert (part["distributed_type"], part["mixed_precision"]) == ("FSDP", "bf16")
    one_rank = NodeGroup(2, 0, "h").machine_settings({"num_processes": 1, "distributed_type": "NO"})
    assert one_rank["distributed_type"] == "MULTI_GPU"  # one rank per node is still a group


def test_a_worker_environment_names_its_group_and_a_single_node_none() -> None:
    group = NodeGroup(2, 1, "h", 1234)
    assert NodeGroup.from_env(group.env()) == group
    assert NodeGroup.from_env({}) is None
