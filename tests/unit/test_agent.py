"""The node plan: which worker sees which GPUs, and the accelerate config each trial runs under."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from wbsweep.agent import (
    ACCELERATE_CONFIG_ENV,
    WorkerSlot,
    accelerate_config,
    plan_slots,
    visible_gpus,
    worker_env,
    write_accelerate_configs,
)
from wbsweep.errors import WbsweepError


def ports():
    counter = itertools.count(30000)
    return lambda: next(counter)


def test_gpus_split_into_slices_with_distinct_ports() -> None:
    slots = plan_slots(["0", "1", "2", "3", "4"], gpus_per_trial=2, ports=ports())
    assert [s.gpus for s in slots] == [("0", "1"), ("2", "3")]
    assert [s.num_processes for s in slots] == [2, 2]
    assert len({s.port for s in slots}) == 2


def test_one_gpu_per_worker_by_default_and_workers_caps_it() -> None:
    assert [s.gpus for s in plan_slots(["3", "5"], ports=ports())] == [("3",), ("5",)]
    assert len(plan_slots(["0", "1", "2"], workers=2, ports=ports())) == 2


def test_more_workers_than_slices_share_them_round_robin() -> None:
    slots = plan_slots(["0", "1"], workers=3, ports=ports())
    assert [s.gpus for s in slots] == [("0",), ("1",), ("0",)]
    assert len({s.port for s in slots}) == 3


def test_cpu_workers_and_processes() -> None:
    slots = plan_slots([], workers=3, processes_per_trial=2, ports=ports())
    assert [(s.gpus, s.num_processes) for s in slots] == [((), 2)] * 3
    assert len(plan_slots([], ports=ports())) == 1


@pytest.mark.parametrize(
    ("gpus", "kwargs", "needle"),
    [
        (["0"], {"gpus_per_trial": 2}, "--gpus-per-trial 2"),
        ([], {"gpus_per_trial": 1}, "no GPU"),
        ([], {"workers": 0}, "--workers"),
        (["0", "1"], {"gpus_per_trial": 2, "processes_per_trial": 4}, "--processes-per-trial"),
    ],
)
def test_impossible_plans_are_clear_errors(gpus: list[str], kwargs: dict, needle: str) -> None:
    with pytest.raises(WbsweepError, match=needle):
        plan_slots(gpus, ports=ports(), **kwargs)


def test_visible_gpus_reads_cuda_visible_devices() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_accelerate_config_for_cpu_ranks_and_gpu_slices() -> None:
    cpu = accelerate_config(WorkerSlot(0, (), 2, 29601))
    assert (cpu["distributed_type"], cpu["num_processes"], cpu["use_cpu"]) == ("MULTI_GPU", 2, True)
    assert cpu["main_process_port"] == 29601
    single = accelerate_config(WorkerSlot(1, ("4",), 1, 29602))
    assert (single["distributed_type"], single["use_cpu"]) == ("NO", False)


def test_worker_env_pins_its_slice(tmp_path: Path) -> None:
    slot = WorkerSlot(1, ("2", "3"), 2, 29700)
    (path,) = write_accelerate_configs([slot], tmp_path)
    env = worker_env(slot, path, {"PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert env[ACCELERATE_CONFIG_ENV] == str(path)
    assert yaml.safe_load(path.read_text())["num_processes"] == 2
    cpu_env = worker_env(WorkerSlot(0, (), 1, 1), path, {"PATH": "/usr/bin"})
    assert cpu_env["CUDA_VISIBLE_DEVICES"] == "" and cpu_env["ACCELERATE_USE_CPU"] == "true"
