"""The verdict of ``scripts/gpu_memory_check.py``, from the figures it gathers.

The script itself needs a GPU (``--cpu`` runs its sweeps without the GPU columns);
here its verdict is given the samples and logs a GPU run would leave, made up
in each test, since no GPU is on this machine.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from helpers import REPO

_spec = importlib.util.spec_from_file_location(
    "gpu_memory_check", REPO / "scripts" / "gpu_memory_check.py"
)
assert _spec is not None and _spec.loader is not None
check: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)

MIB = 2**20
DONE = {"exit": 0, "finished": 4}


def _warm_log(folder: Path, name: str, *allocated: int) -> None:
    lines = [f"wbsweep.warm: rank 0 allocated {b} bytes after its trial\n" for b in allocated]
    (folder / f"warm-{name}.log").write_text("".join(lines))


def test_a_warm_rank_whose_allocator_counter_grows_fails_the_check(tmp_path: Path) -> None:
    _warm_log(tmp_path, "w0", 5 * MIB, 5 * MIB, 5 * MIB)  # the same after every trial
    _warm_log(tmp_path, "w1", 5 * MIB, 40 * MIB, 90 * MIB)  # 85 MiB more than after the first
    grew = check._allocated(tmp_path)
    assert grew == 85 * MIB
    assert not check.passed({**DONE, "allocated": grew}, 4, tolerance_mib=64)
    assert check.passed({**DONE, "allocated": grew}, 4, tolerance_mib=100)
    (tmp_path / "warm-w1.log").unlink()
    assert check._allocated(tmp_path) == 0
    assert check._allocated(tmp_path / "cold") is None  # no warm logs: no counter
    assert check.passed({**DONE, "allocated": None}, 4, tolerance_mib=64)
    assert not check.passed({**DONE, "finished": 3, "allocated": 0}, 4, tolerance_mib=64)


def test_a_cold_trial_whose_processes_keep_gpu_memory_fails_the_check() -> None:
    runs = [{"id": "a", "finished_at": 10.0}, {"id": "b", "finished_at": 20.0}]
    gpus = {"0": (1000, 50)}
    freed = [(11.0, gpus, {"a": 900}), (13.0, gpus, {"b": 900}), (23.0, gpus, {})]
    out = check._memory("cold", runs, freed, {"0": (0, 0)}, {"0": (0, 0)}, 64)
    assert out["memory_ok"] and out["trial_mib"] == 0
    kept = [*freed, (25.0, gpus, {"b": 700})]  # run b's processes, 5 s after it ended
    out = check._memory("cold", runs, kept, {"0": (0, 0)}, {"0": (0, 0)}, 64)
    assert not out["memory_ok"] and out["trial_mib"] == 700
    out = check._memory("cold", runs, freed, {"0": (0, 0)}, {"0": (500, 0)}, 64)
    assert not out["memory_ok"]  # the GPU did not return to its baseline


def test_a_warm_group_that_grows_fails_and_unnamed_processes_say_n_a() -> None:
    runs = [{"id": "a", "finished_at": 10.0}, {"id": "b", "finished_at": 20.0}]
    gpus = {"0": (1000, 50)}
    grows = [(10.6, gpus, {"/tmp/g.sock": 600}), (20.6, gpus, {"/tmp/g.sock": 800})]
    out = check._memory("warm", runs, grows, {"0": (0, 0)}, {"0": (0, 0)}, 64)
    assert not out["memory_ok"] and out["trial_mib"] == 200
    unnamed = [(10.6, gpus, {}), (20.6, gpus, {})]  # nvidia-smi saw no process of ours
    out = check._memory("warm", runs, unnamed, {"0": (0, 0)}, {"0": (0, 0)}, 64)
    assert out["trial_mib"] is None and out["memory_ok"]
