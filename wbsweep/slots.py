"""How a node is split into worker slots, and what each worker and its trials see.

Pure planning (``plan_slots``, ``accelerate_config``, ``worker_env``): the
node's GPUs (or CPU processes) in slices, one ``accelerate`` config per slice,
and the environment each worker runs in. :mod:`wbsweep.agent` runs the plan.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wbsweep.errors import UsageError
from wbsweep.shape import TrialShape

__all__ = [
    "ACCELERATE_CONFIG_ENV",
    "SWEEP_FILE_ENV",
    "WorkerSlot",
    "accelerate_config",
    "default_accelerate_config_file",
    "free_port",
    "plan_slots",
    "shaped_slots",
    "threads_per_rank",
    "user_accelerate_config",
    "visible_gpus",
    "worker_env",
    "write_accelerate_configs",
]

ACCELERATE_CONFIG_ENV = "WBSWEEP_ACCELERATE_CONFIG"
#: The sweep file on this node when it is not where the sweep records it.
SWEEP_FILE_ENV = "WBSWEEP_SWEEP_FILE"


@dataclass(frozen=True)
class WorkerSlot:
    """What one worker's trials get: GPU ids (empty on CPU), ranks per trial, a port."""

    index: int
    gpus: tuple[str, ...]
    num_processes: int
    port: int

    @property
    def device(self) -> str:
        return f"GPUs {','.join(self.gpus)}" if self.gpus else "CPU"


def visible_gpus(env: Mapping[str, str], *, probe: bool = True) -> list[str]:
    """GPU ids this node may use: ``CUDA_VISIBLE_DEVICES``, else what ``nvidia-smi`` lists."""
    if "CUDA_VISIBLE_DEVICES" in env:
        return [g.strip() for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    if not probe or shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def plan_slots(
    gpus: Sequence[str],
    *,
    gpus_per_trial: int | None = None,
    workers: int | None = None,
    processes_per_trial: int | None = None,
    ports: Callable[[], int] | None = None,
) -> list[WorkerSlot]:
    """Split the node into worker slots.

    With GPUs: slices of ``gpus_per_trial`` (default 1), one rank per GPU, one
    worker per slice; ``workers`` fewer than that leaves slices idle, more
    shares the slices round-robin. On CPU: ``workers`` (default 1) slots of
    ``processes_per_trial`` (default 1) ranks each.

    >>> [s.gpus for s in plan_slots(["0", "1", "2", "3"], gpus_per_trial=2, ports=lambda: 1)]
    [('0', '1'), ('2', '3')]
    """
    next_port = ports or free_port
    for name, value in (
        ("--gpus-per-trial", gpus_per_trial),
        ("--workers", workers),
        ("--processes-per-trial", processes_per_trial),
    ):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
    if gpus:
        per = gpus_per_trial or 1
        if processes_per_trial is not None and processes_per_trial != per:
            raise UsageError(
                "--processes-per-trial is for CPU nodes; on GPUs each trial runs one "
                "rank per GPU (--gpus-per-trial)"
            )
        if per > len(gpus):
            raise UsageError(
                f"--gpus-per-trial {per} needs {per} GPUs, but this node sees {len(gpus)}"
            )
        slices = [tuple(gpus[i * per : (i + 1) * per]) for i in range(len(gpus) // per)]
        # More workers than slices share them round-robin (small models, big GPUs).
        count = workers if workers is not None else len(slices)
        return [WorkerSlot(i, slices[i % len(slices)], per, next_port()) for i in range(count)]
    if gpus_per_trial is not None:
        raise UsageError("--gpus-per-trial given, but this node sees no GPU")
    return [WorkerSlot(i, (), processes_per_trial or 1, next_port()) for i in range(workers or 1)]


def shaped_slots(
    shape: TrialShape,
    gpus: Sequence[str],
    *,
    gpus_per_trial: int | None = None,
    processes_per_trial: int | None = None,
    workers: int | None = None,
    what: str = "the sweep",
) -> tuple[list[WorkerSlot], bool]:
    """This node's slots for a sweep's recorded ``shape``, and whether they override it.

    ``--gpus-per-trial``/``--processes-per-trial`` given on the agent are an
    explicit override; without them a node that cannot run the recorded shape
    (too few GPUs, or none for a GPU sweep) is refused.

    >>> slots, overridden = shaped_slots(TrialShape(2), ["0", "1", "2", "3"])
    >>> [s.gpus for s in slots], overridden
    ([('0', '1'), ('2', '3')], False)
    >>> [s.num_processes for s in shaped_slots(TrialShape(2), [], processes_per_trial=1)[0]]
    [1]
    """
    explicit = gpus_per_trial is not None or processes_per_trial is not None
    if not explicit and shape.recorded:
        if gpus and shape.ranks > len(gpus):
            raise UsageError(
                f"{what} runs each trial on {shape.ranks} GPUs, but this node sees "
                f"{len(gpus)}: give --gpus-per-trial N to run it here in another shape "
                "(each run records it)"
            )
        if not gpus and shape.gpus:
            raise UsageError(
                f"{what} runs each trial on {shape.ranks} GPU(s), but this node sees none: "
                "give --processes-per-trial N to run it on CPU here (each run records it)"
            )
        if gpus:
            gpus_per_trial = shape.ranks
        else:
            processes_per_trial = shape.ranks
    slots = plan_slots(
        gpus,
        gpus_per_trial=gpus_per_trial,
        workers=workers,
        processes_per_trial=processes_per_trial,
    )
    overridden = shape.recorded and (
        slots[0].num_processes != shape.ranks or (shape.gpus and not gpus)
    )
    return slots, overridden


def free_port() -> int:
    """A TCP port free right now on this host (each worker's rendezvous port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: ``distributed_type`` values that name a plugin of the user's: kept as they are.
PLUGINS = frozenset({"FSDP", "DEEPSPEED", "MEGATRON_LM", "XLA"})


def default_accelerate_config_file(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``accelerate config`` saves its default, as ``accelerate launch`` looks for it."""
    env = os.environ if environ is None else environ
    cache = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    hf_home = env.get("HF_HOME") or os.path.join(cache, "huggingface")
    return Path(hf_home) / "accelerate" / "default_config.yaml"


def user_accelerate_config(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The user's accelerate config: ``path``, else the default one when it exists, else ``{}``.

    Raises:
        UsageError: ``path`` is missing, or either file is not a YAML mapping.
    """
    chosen = Path(path) if path is not None else default_accelerate_config_file(environ)
    if not chosen.is_file():
        if path is not None:
            raise UsageError(f"accelerate config {str(path)!r} not found")
        return {}
    try:
        loaded = yaml.safe_load(chosen.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"accelerate config {str(chosen)!r} is not readable YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise UsageError(f"accelerate config {str(chosen)!r} is not a mapping of settings")
    return loaded


def accelerate_config(slot: WorkerSlot, user: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``accelerate launch --config_file`` contents for one worker's trials.

    Every setting of ``user`` (mixed precision, an FSDP or DeepSpeed section,
    dynamo, ...) is kept; only what the worker owns is set: its ranks, GPUs,
    port and the one-machine settings.

    >>> slot = WorkerSlot(0, ("0", "1"), 2, 29500)
    >>> c = accelerate_config(slot, {"distributed_type": "FSDP", "mixed_precision": "bf16",
    ...                              "fsdp_config": {"fsdp_version": 2}, "num_processes": 8})
    >>> c["distributed_type"], c["mixed_precision"], c["fsdp_config"], c["num_processes"]
    ('FSDP', 'bf16', {'fsdp_version': 2}, 2)
    """
    config: dict[str, Any] = {"compute_environment": "LOCAL_MACHINE", "mixed_precision": "no"}
    config.update(user or {})
    if config.get("distributed_type") not in PLUGINS:
        # On CPU, MULTI_GPU with use_cpu is what gives a real gloo group.
        config["distributed_type"] = "MULTI_GPU" if slot.num_processes > 1 else "NO"
    config.update(
        {
            "num_processes": slot.num_processes,
            "num_machines": 1,
            "machine_rank": 0,
            "main_process_port": slot.port,
            "use_cpu": not slot.gpus,
            # CUDA_VISIBLE_DEVICES holds the worker's slice: every GPU it sees is its own.
            "gpu_ids": "all",
            "rdzv_backend": "static",
            "same_network": True,
        }
    )
    return config


def threads_per_rank(
    slots: Sequence[WorkerSlot], environ: Mapping[str, str], cores: int | None = None
) -> int | None:
    """On a CPU node, each rank's share of the cores; ``None`` with GPUs or a user's setting.

    Every rank's torch would otherwise start one thread per core, and the
    node's workers together would run several threads per core. ``cores`` is
    the physical cores (read from the node when ``None``).

    >>> threads_per_rank([WorkerSlot(0, (), 2, 1), WorkerSlot(1, (), 2, 2)], {}, cores=16)
    4
    >>> threads_per_rank([WorkerSlot(0, (), 1, 1)], {"OMP_NUM_THREADS": "8"}, cores=16) is None
    True
    """
    if "OMP_NUM_THREADS" in environ or any(slot.gpus for slot in slots):
        return None
    if cores is None:
        import psutil

        cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    ranks = sum(slot.num_processes for slot in slots) or 1
    return max(1, cores // ranks)


def worker_env(
    slot: WorkerSlot, config_file: Path, base_env: Mapping[str, str], threads: int | None = None
) -> dict[str, str]:
    """The environment one worker (and so each of its trials) runs in.

    ``threads`` (see :func:`threads_per_rank`) becomes ``OMP_NUM_THREADS``,
    which ``accelerate launch`` passes to every rank as its torch threads.
    """
    # Without this process's wandb-core address: each worker needs its own.
    env = {k: v for k, v in base_env.items() if k != "WANDB_SERVICE"}
    env[ACCELERATE_CONFIG_ENV] = str(config_file)
    # Pin the slice; on CPU hide GPUs so no trial grabs one by accident.
    env["CUDA_VISIBLE_DEVICES"] = ",".join(slot.gpus)
    if not slot.gpus:
        env["ACCELERATE_USE_CPU"] = "true"
    # `accelerate` and `python` in the sweep command resolve to this install.
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def write_accelerate_configs(
    slots: Sequence[WorkerSlot], directory: Path, user: Mapping[str, Any] | None = None
) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for slot in slots:
        path = directory / f"accelerate-worker{slot.index}.yaml"
        path.write_text(yaml.safe_dump(accelerate_config(slot, user), sort_keys=False))
        paths.append(path)
    return paths
