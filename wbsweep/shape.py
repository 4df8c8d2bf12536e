"""A sweep's trial shape: ranks per trial, mixed precision and extra ``accelerate launch`` flags.

The objective depends on how a trial runs (2 ranks see a different effective
batch than 1), so ``wbsweep create`` fixes the shape once and records it in the
sweep's ``command``, where every node reads it: ``wbsweep agent``, and the
launcher a plain ``wandb agent`` runs. The tokens sit between the sweep file and
``${args_json_file}``::

    ... -m wbsweep.launch sweep.py --metric objective --goal minimize \\
        --ranks-per-trial 2 --on gpu --mixed-precision bf16 \\
        --accelerate-arg=--dynamo_backend=inductor ${args_json_file}
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wbsweep.errors import UsageError

__all__ = [
    "MIXED_PRECISION",
    "OVERRIDE_ENV",
    "OWNED_FLAGS",
    "WORKER_ENV",
    "TrialShape",
    "parse_shape",
    "ran_as",
    "sweep_shape",
]

MIXED_PRECISION = ("no", "fp16", "bf16", "fp8")
#: Set in a worker's environment when its agent runs trials in another shape than the sweep's.
OVERRIDE_ENV = "WBSWEEP_SHAPE_OVERRIDE"
#: Set in a worker's environment by ``wbsweep agent``: the worker's name, recorded with each run.
WORKER_ENV = "WBSWEEP_WORKER"
#: ``accelerate launch`` flags wbsweep sets per worker and node: not the user's to record.
OWNED_FLAGS = frozenset(
    {
        "--config_file", "--num_processes", "--num_machines", "--machine_rank", "--gpu_ids",
        "--main_process_ip", "--main_process_port", "--multi_gpu", "--cpu", "--use_cpu",
        "--mixed_precision", "--module", "-m", "--num_cpu_threads_per_process",
        "--rdzv_backend", "--same_network",
    }
)  # fmt: skip


@dataclass(frozen=True)
class TrialShape:
    """How every trial of a sweep runs.

    Attributes:
        ranks: Processes per trial (one GPU each on a GPU node).
        gpus: Whether each rank needs a GPU (``create --gpus-per-trial``).
        mixed_precision: ``no``/``fp16``/``bf16``/``fp8``; ``None``: each node's config decides.
        accelerate_args: Extra ``accelerate launch`` flags, as recorded.
        recorded: Whether the sweep recorded a shape (older sweeps did not).
    """

    ranks: int = 1
    gpus: bool = False
    mixed_precision: str | None = None
    accelerate_args: tuple[str, ...] = field(default=())
    recorded: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.ranks, bool) or not isinstance(self.ranks, int) or self.ranks < 1:
            raise UsageError(f"ranks per trial must be at least 1, got {self.ranks!r}")
        if self.mixed_precision is not None and self.mixed_precision not in MIXED_PRECISION:
            raise UsageError(
                f"mixed precision must be one of {', '.join(MIXED_PRECISION)}, "
                f"got {self.mixed_precision!r}"
            )
        for arg in self.accelerate_args:
            flag = arg.split("=", 1)[0]
            if not flag.startswith("-"):
                continue  # a value of the flag before it
            if flag in OWNED_FLAGS:
                raise UsageError(
                    f"accelerate flag {flag} is set by wbsweep per worker and node; "
                    "use --gpus-per-trial/--processes-per-trial/--mixed-precision instead"
                    if flag != "--config_file"
                    else "accelerate flag --config_file: give wbsweep agent --accelerate-config"
                )

    def tokens(self) -> list[str]:
        """The shape as ``wbsweep.launch`` options, to record in the sweep's command.

        >>> TrialShape(2, True, "bf16", ("--dynamo_backend=inductor",)).tokens()
        ['--ranks-per-trial', '2', '--on', 'gpu', '--mixed-precision', 'bf16', \
'--accelerate-arg=--dynamo_backend=inductor']
        """
        out = ["--ranks-per-trial", str(self.ranks), "--on", "gpu" if self.gpus else "any"]
        if self.mixed_precision is not None:
            out += ["--mixed-precision", self.mixed_precision]
        # ``=`` keeps a value starting with ``-`` attached to its option.
        return out + [f"--accelerate-arg={arg}" for arg in self.accelerate_args]

    def accelerate_config(self, user: Mapping[str, Any]) -> dict[str, Any]:
        """``user``'s accelerate config with the sweep's recorded mixed precision, if any.

        >>> TrialShape(1, mixed_precision="bf16").accelerate_config({"mixed_precision": "no"})
        {'mixed_precision': 'bf16'}
        """
        if self.mixed_precision is None:
            return dict(user)
        return {**user, "mixed_precision": self.mixed_precision}

    def describe(self) -> str:
        """``2 GPUs per trial, bf16`` or ``1 rank per trial (GPU or CPU)``.

        >>> TrialShape(2, True, "bf16").describe(), TrialShape().describe()
        ('2 GPUs per trial, bf16', '1 rank per trial (GPU or CPU)')
        """
        if self.gpus:
            text = f"{self.ranks} GPU{'s' if self.ranks > 1 else ''} per trial"
        else:
            text = f"{self.ranks} rank{'s' if self.ranks > 1 else ''} per trial (GPU or CPU)"
        if self.mixed_precision not in (None, "no"):
            text += f", {self.mixed_precision}"
        if self.accelerate_args:
            text += ", accelerate " + " ".join(self.accelerate_args)
        return text

    @classmethod
    def from_options(
        cls,
        *,
        gpus_per_trial: int | None,
        processes_per_trial: int | None,
        mixed_precision: str | None,
        accelerate_args: Sequence[str] = (),
    ) -> TrialShape:
        """``create``'s flags: ``--gpus-per-trial`` or ``--processes-per-trial`` (default 1)."""
        if gpus_per_trial is not None and processes_per_trial is not None:
            raise UsageError("give --gpus-per-trial or --processes-per-trial, not both")
        ranks = next((n for n in (gpus_per_trial, processes_per_trial) if n is not None), 1)
        name = "--gpus-per-trial" if gpus_per_trial is not None else "--processes-per-trial"
        if ranks < 1:
            raise UsageError(f"{name} must be at least 1, got {ranks}")
        return cls(ranks, gpus_per_trial is not None, mixed_precision, tuple(accelerate_args))


def ran_as(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """How this trial runs, as its run records it: ranks, mixed precision, nodes, and whether
    an agent's explicit flags overrode the sweep's shape.

    >>> ran_as({"WORLD_SIZE": "2", "ACCELERATE_MIXED_PRECISION": "bf16", OVERRIDE_ENV: "1"})
    {'ranks': 2, 'mixed_precision': 'bf16', 'override': True}
    """
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {
        "ranks": int(env.get("WORLD_SIZE", "1") or 1),
        "mixed_precision": env.get("ACCELERATE_MIXED_PRECISION", "no") or "no",
        "override": env.get(OVERRIDE_ENV) == "1",
    }
    if int(env.get("WBSWEEP_NODES", "1") or 1) > 1:
        out["nodes"] = int(env["WBSWEEP_NODES"])
    if env.get("WBSWEEP_WARM_GROUP") == "1":  # a warm worker's group (wbsweep.warm)
        out["warm"] = True
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--ranks-per-trial", type=int)
    parser.add_argument("--on", choices=("gpu", "any"), default="any")
    parser.add_argument("--mixed-precision", choices=MIXED_PRECISION)
    parser.add_argument("--accelerate-arg", action="append", default=[])
    return parser


def parse_shape(argv: Sequence[str]) -> tuple[TrialShape, list[str]]:
    """The shape recorded in ``argv`` and the other tokens, in order.

    A command with no ``--ranks-per-trial`` (a sweep from before shapes were
    recorded) gives an unrecorded default shape.

    >>> shape, rest = parse_shape(["--metric", "m", "--ranks-per-trial", "2", "p.json"])
    >>> shape.ranks, shape.recorded, rest
    (2, True, ['--metric', 'm', 'p.json'])
    """
    options, rest = _parser().parse_known_args(list(argv))
    if options.ranks_per_trial is None:
        return TrialShape(recorded=False), rest
    shape = TrialShape(
        options.ranks_per_trial,
        options.on == "gpu",
        options.mixed_precision,
        tuple(options.accelerate_arg),
    )
    return shape, rest


def sweep_shape(command: Sequence[str] | None) -> TrialShape:
    """The shape recorded in a sweep's ``command`` (unrecorded default when none)."""
    tokens = list(command or [])
    if "wbsweep.launch" in tokens:
        tokens = tokens[tokens.index("wbsweep.launch") + 1 :]
    return parse_shape(tokens)[0]
