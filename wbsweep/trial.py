"""The trial entrypoint, run on every rank under ``accelerate launch``.

::

    accelerate launch <flags> -m wbsweep.trial SWEEP_FILE \\
        --metric NAME --goal minimize|maximize PARAMS_JSON_FILE

Every rank reads the params file itself, so all ranks train with the same
hyperparameters without a broadcast. Params that are ``TrainingArguments``
fields set those fields (typed as the field is); ``model_init`` gets the whole
params dict. Rank 0 alone owns the W&B run and reports to the local store.

Environment read:

* ``RANK`` (set by the launcher): which rank this is; absent means 0.
* ``WANDB_RUN_ID``, ``WANDB_SWEEP_ID``: the run (and sweep) to join.
* ``WANDB_PROJECT``: the run's project (``wandb agent`` sets the sweep's); else ``SWEEP``'s.
* ``WBSWEEP_STORE``: the local store to report to (rank 0 only).
* ``WBSWEEP_DEBUG=1``: print full tracebacks on failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import functools
import hashlib
import json
import math
import os
import signal
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from types import UnionType as _UnionType
from typing import Any, Literal, Protocol, Union, get_args, get_origin, get_type_hints

from wbsweep import procs
from wbsweep.errors import TrialError, WbsweepError
from wbsweep.sweepfile import SweepFile, describe_error, load_sweep_file

__all__ = [
    "EXIT_TERMINATED",
    "LocalStoreReporter",
    "Reporter",
    "TrialResult",
    "apply_params",
    "datasets_of",
    "first_step_callback",
    "objective_of",
    "plain_floats",
    "trainer_kwargs_of",
    "training_fields",
    "main",
    "reporter_from_env",
    "run_trial",
]

EXIT_FAILED = 1
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a SIGTERMed process
GOALS = ("minimize", "maximize")

# Read before anything slow: compared after PR_SET_PDEATHSIG to catch a
# launcher that died while this process was still starting.
_PARENT_AT_START = os.getppid()

# Arguments run_trial owns; a sweep file's trainer_kwargs() must not set them.
_RESERVED_TRAINER_KWARGS = frozenset(
    {"model", "model_init", "args", "train_dataset", "eval_dataset"}
)


@dataclass(frozen=True)
class TrialResult:
    """What one trial produced.

    Attributes:
        objective: The finite objective value (``compute_objective(metrics)``).
        metrics: The final evaluation metrics, as plain floats.
        run_id: The run id (the W&B run's id on rank 0).
        output_dir: Where the Trainer wrote (``output_dir/run-<run id>``).
    """

    objective: float
    metrics: dict[str, float]
    run_id: str
    output_dir: str


class Reporter(Protocol):
    """Where rank 0 reports a trial's progress besides W&B (the sweep's own record)."""

    def started(self, run_id: str) -> None:
        """The trial took its first training step."""

    def finished(self, run_id: str, objective: float, metrics: dict[str, float]) -> None:
        """The trial evaluated; ``metrics`` are its final eval metrics."""


class LocalStoreReporter:
    """Reports to the local backend's store (``wbsweep.backends.local``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = path
        self._backend: Any = None

    def _store(self) -> Any:
        if self._backend is None:
            # Imported late: only rank 0 of a local-backend trial needs it.
            from wbsweep.backends.local import LocalBackend

            self._backend = LocalBackend(self._path)
        return self._backend

    def started(self, run_id: str) -> None:
        self._store().record_started(run_id)

    def finished(self, run_id: str, objective: float, metrics: dict[str, float]) -> None:
        self._store().record_result(run_id, objective, metrics)


class _Terminated(BaseException):
    """Raised by the SIGTERM handler; a BaseException so user ``except Exception`` can't eat it."""


def rank() -> int:
    """This process's global rank, as the launcher set it (0 when not distributed)."""
    return int(os.environ.get("RANK", "0") or 0)


def reporter_from_env(environ: Mapping[str, str] | None = None) -> Reporter | None:
    """The reporter for this rank: the local store named by ``WBSWEEP_STORE`` on rank 0."""
    environ = os.environ if environ is None else environ
    path = environ.get("WBSWEEP_STORE")
    if not path or int(environ.get("RANK", "0") or 0) != 0:
        return None
    return LocalStoreReporter(path)


def run_trial(
    sweep: SweepFile,
    params: dict[str, Any],
    *,
    run_id: str | None,
    metric: str,
    goal: str,
    reporter: Reporter | None = None,
) -> TrialResult:
    """Train and evaluate one trial on this rank; rank 0 logs it.

    Callable again in the same process for the next trial: each call builds a
    fresh model, ``TrainingArguments`` and ``Trainer``, and finishes its W&B run.

    Args:
        sweep: The loaded sweep file.
        params: This trial's params (the same dict on every rank).
        run_id: The run id; None derives one every rank agrees on from the params.
        metric: The sweep metric's name, logged with the objective's value.
        goal: ``"minimize"`` or ``"maximize"``; sets the metric's W&B summary.
        reporter: Rank 0's reporter, or None.

    Returns:
        The objective and final eval metrics.

    Raises:
        TrialError: The sweep file returned something unusable, the params do
            not fit ``TrainingArguments``, or the objective is not finite.
        Exception: Whatever the user's code or Trainer raised.
    """
    if goal not in GOALS:
        raise TrialError(f"goal must be one of {', '.join(GOALS)}, not {goal!r}")
    from transformers import Trainer, TrainingArguments

    run_id = run_id or _derived_run_id(json.dumps(params, sort_keys=True, default=str))
    is_main = rank() == 0
    if not is_main:
        # Belt and braces: WandbCallback only inits on rank 0, but nothing
        # on this rank may create a W&B run.
        os.environ["WANDB_MODE"] = "disabled"

    base = sweep.training_args()
    if not isinstance(base, TrainingArguments):
        raise TrialError(f"training_args() returned {type(base).__name__}, not TrainingArguments")
    args = apply_params(base, params, run_dir=f"run-{run_id}")
    train_dataset, eval_dataset = datasets_of(sweep)
    kwargs = trainer_kwargs_of(sweep)
    if is_main and reporter is not None:
        started = first_step_callback(functools.partial(reporter.started, run_id))
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), started]

    run = _start_wandb(sweep, params, args, run_id, metric, goal) if is_main else None
    progress = _objective_callback(sweep, run, metric) if run is not None else None
    if progress is not None:
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), progress]
    exit_code = EXIT_FAILED
    try:
        trainer = Trainer(
            model_init=_ModelInit(sweep.model_init, params),
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            **kwargs,
        )
        trainer.train()
        if progress is not None:
            progress.training = False
        metrics = plain_floats(trainer.evaluate())
        objective = _objective(sweep, metrics)
        if run is not None:
            run.log({**metrics, metric: objective})
            run.summary[metric] = objective
        if is_main and reporter is not None:
            reporter.finished(run_id, objective, metrics)
        exit_code = 0
    except _Terminated:
        exit_code = EXIT_TERMINATED
        raise
    finally:
        if run is not None:
            run.finish(exit_code=exit_code)
    return TrialResult(objective, metrics, run_id, args.output_dir)


def apply_params(base: Any, params: Mapping[str, Any], *, run_dir: str | None = None) -> Any:
    """The trial's ``TrainingArguments``: ``base`` with the params that are its fields.

    Each value is converted to its field's type (``16.0`` -> ``16`` for an int,
    ``"true"`` -> ``True`` for a bool, a name -> the enum member for
    ``lr_scheduler_type``); params that are not fields (model params) are left
    to ``model_init``. The copy is built with ``dataclasses.replace``, so
    ``TrainingArguments`` validates the combination as it does any other.

    Args:
        base: The sweep file's ``TrainingArguments`` (or a subclass).
        params: The trial's params.
        run_dir: When given, ``output_dir`` becomes ``output_dir/run_dir``.

    Returns:
        A new arguments object; ``base`` is unchanged.

    Raises:
        TrialError: A value cannot be converted, or the arguments reject it.
    """
    cls: type = type(base)
    hints = _field_hints(cls)
    changes = {
        name: _coerce(name, value, hints[name]) for name, value in params.items() if name in hints
    }
    if run_dir is not None:
        changes["output_dir"] = os.path.join(changes.get("output_dir") or base.output_dir, run_dir)
    try:
        return dataclasses.replace(base, **changes)
    except (TypeError, ValueError) as exc:
        message = " ".join(str(exc).split())
        raise TrialError(f"TrainingArguments rejected the trial's params: {message}") from exc


def training_fields(cls: type | None = None) -> frozenset[str]:
    """Names of the ``TrainingArguments`` fields (of ``cls``, a subclass, when given)."""
    if cls is None:
        from transformers import TrainingArguments

        cls = TrainingArguments
    return frozenset(_field_hints(cls))


@functools.cache
def _field_hints(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


_NOT_CONVERTED = object()
_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "off"})


def _coerce(name: str, value: Any, hint: Any) -> Any:
    members = _union_members(hint)
    if Any in members:
        return value
    if value is None:
        if type(None) in members:
            return None
        raise TrialError(f"param {name}: None is not allowed for TrainingArguments.{name}")
    # An ``Enum | str`` field means "one of the enum's names", so check enums first.
    for member in members:
        if isinstance(member, type) and issubclass(member, enum.Enum):
            try:
                return member(value)
            except ValueError:
                choices = ", ".join(str(item.value) for item in member)
                raise TrialError(f"param {name}={value!r} is not one of: {choices}") from None
    for member in members:
        if get_origin(member) is Literal and value in get_args(member):
            return value
        container = get_origin(member) or member
        if container in (dict, list) and isinstance(value, container):
            return value
        if type(value) is member:  # exact: a bool is not taken for an int
            return value
    for target in (bool, int, float, str):
        if target in members:
            converted = _convert(value, target)
            if converted is not _NOT_CONVERTED:
                return converted
    wanted = " | ".join(getattr(m, "__name__", str(m)) for m in members)
    raise TrialError(f"param {name}={value!r} does not fit TrainingArguments.{name} ({wanted})")


def _union_members(hint: Any) -> tuple[Any, ...]:
    if get_origin(hint) in (Union, _UnionType):
        return get_args(hint)
    return (hint,)


def _convert(value: Any, target: type) -> Any:
    if target is bool:
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        return _NOT_CONVERTED
    if isinstance(value, bool):
        return _NOT_CONVERTED  # True as a learning rate or a batch size is a mistake
    if target is int:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return _NOT_CONVERTED
        return int(number) if number.is_integer() else _NOT_CONVERTED
    if target is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            return _NOT_CONVERTED
    if target is str and isinstance(value, int | float):
        return str(value)
    return _NOT_CONVERTED


class _ModelInit:
    """``model_init`` bound to the trial's params, building one model per trial.

    Zero-argument on purpose: ``Trainer.call_model_init`` passes its own
    ``trial`` (None outside ``hyperparameter_search``), never our params.
    Trainer asks twice (in ``__init__`` and again in ``train``); the second
    ask gets the same untouched model instead of a second, identical load.
    """

    def __init__(self, model_init: Callable[..., Any], params: dict[str, Any]) -> None:
        self._model_init = model_init
        self._params = params
        self._spare: Any = None
        self._calls = 0

    def __call__(self) -> Any:
        self._calls += 1
        if self._spare is not None:
            model, self._spare = self._spare, None
            return model
        model = self._model_init(dict(self._params))
        if model is None:
            raise TrialError("model_init returned None")
        if self._calls == 1:
            self._spare = model
        return model


def datasets_of(sweep: SweepFile) -> tuple[Any, Any]:
    value = sweep.datasets()
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise TrialError("datasets() must return (train_dataset, eval_dataset)")
    return value[0], value[1]


def trainer_kwargs_of(sweep: SweepFile) -> dict[str, Any]:
    if sweep.trainer_kwargs is None:
        return {}
    kwargs = sweep.trainer_kwargs()
    if not isinstance(kwargs, Mapping):
        raise TrialError(f"trainer_kwargs() returned {type(kwargs).__name__}, not a dict")
    reserved = sorted(_RESERVED_TRAINER_KWARGS & set(kwargs))
    if reserved:
        raise TrialError(
            f"trainer_kwargs() must not set {', '.join(reserved)}: the trial builds those"
        )
    return dict(kwargs)


def first_step_callback(notify: Callable[[], None]) -> Any:
    """A ``TrainerCallback`` that calls ``notify`` once, at rank 0's first optimizer step."""
    from transformers import TrainerCallback

    class FirstStep(TrainerCallback):
        def __init__(self) -> None:
            self.notify: Callable[[], None] | None = notify

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.notify is not None and state.is_world_process_zero:
                call, self.notify = self.notify, None
                call()

    return FirstStep()


def _objective_callback(sweep: SweepFile, run: Any, metric: str) -> Any:
    """Logs the objective at every evaluation during training, not only at the end.

    W&B's hyperband reads the sweep metric's history: with the objective logged
    at each ``eval_strategy`` evaluation, a weak trial can be stopped early.
    """
    from transformers import TrainerCallback

    class LogObjective(TrainerCallback):
        training = True  # the final evaluation is logged by run_trial itself

        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
        ) -> None:
            if not (self.training and state.is_world_process_zero and metrics):
                return
            try:
                objective = _objective(sweep, plain_floats(metrics))
            except Exception:  # an objective only the final metrics allow
                return
            run.log({metric: objective})

    return LogObjective()


def plain_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics as floats; anything else is dropped."""
    plain: dict[str, float] = {}
    for key, value in metrics.items():
        try:
            plain[key] = float(value)
        except (TypeError, ValueError):
            continue  # non-numeric extras cannot be an objective or a summary number
    return plain


def objective_of(
    compute: Callable[[dict[str, float]], Any] | None, metrics: Mapping[str, float]
) -> float:
    """``compute(metrics)``, or Transformers' ``default_compute_objective``, checked finite."""
    if compute is not None:
        source = "compute_objective(metrics)"
        value = compute(dict(metrics))
    else:
        from transformers.trainer_utils import default_compute_objective

        source = "the default objective (eval_loss, or the sum of eval metrics)"
        value = default_compute_objective(dict(metrics))
    try:
        objective = float(value)
    except (TypeError, ValueError):
        raise TrialError(f"{source} returned {type(value).__name__}, not a number") from None
    if not math.isfinite(objective):
        raise TrialError(f"{source} is {objective}: the objective must be finite")
    return objective


def _objective(sweep: SweepFile, metrics: Mapping[str, float]) -> float:
    return objective_of(sweep.compute_objective, metrics)


def _start_wandb(
    sweep: SweepFile, params: dict[str, Any], args: Any, run_id: str, metric: str, goal: str
) -> Any:
    import wandb

    # `wandb agent entity/project/id` exports the sweep's project: the run must join it.
    project = os.environ.get("WANDB_PROJECT") or sweep.defaults.get("project") or "wbsweep"
    # Params last: a sweep run's config must hold the sweep's own values.
    config = {**args.to_sanitized_dict(), **params}
    run = wandb.init(
        project=project,
        id=run_id,
        config=config,
        # A reused process may still hold the previous trial's run.
        reinit="finish_previous",
    )
    run.define_metric(metric, summary="min" if goal == "minimize" else "max")
    return run


def _derived_run_id(*parts: object) -> str:
    """A run id every rank computes alike: same inputs, same launcher parent."""
    digest = hashlib.sha256("|".join(map(str, (*parts, _PARENT_AT_START))).encode()).digest()
    number = int.from_bytes(digest[:8], "big")
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    chars = []
    for _ in range(8):
        number, index = divmod(number, 36)
        chars.append(alphabet[index])
    return "".join(chars)


def _params_run_id(params_path: str) -> str:
    explicit = os.environ.get("WANDB_RUN_ID")
    if explicit:
        return explicit
    stat = os.stat(params_path)
    return _derived_run_id(os.path.abspath(params_path), stat.st_ino, stat.st_mtime_ns)


def read_params(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the params JSON file (W&B's ``${args_json_file}``): an object of param values."""
    try:
        with open(path, encoding="utf-8") as handle:
            params = json.load(handle)
    except OSError as exc:
        raise TrialError(f"cannot read params file {os.fspath(path)}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise TrialError(f"params file {os.fspath(path)} is not JSON: {exc}") from exc
    if not isinstance(params, dict):
        raise TrialError(f"params file {os.fspath(path)} must hold a JSON object")
    return params


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this rank when its parent (the launcher) dies.

    This is what makes a SIGKILLed ``accelerate launch`` leave no rank behind.
    Exits at once if the parent is already gone.
    """
    procs.die_with_parent(signal.SIGTERM)
    # The parent may have died before prctl took effect; then we were reparented.
    if os.getppid() != _PARENT_AT_START:
        raise SystemExit(EXIT_TERMINATED)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # A second SIGTERM while cleaning up kills at once.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise _Terminated


def _destroy_process_group() -> None:
    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    try:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - teardown must not hide the trial's own outcome
        pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wbsweep.trial", description="Run one trial of a sweep (every rank)."
    )
    parser.add_argument("sweep_file", help="the sweep file (Python)")
    parser.add_argument("params_file", help="JSON object of this trial's params")
    parser.add_argument("--metric", default="objective", help="sweep metric name")
    parser.add_argument("--goal", choices=GOALS, default="minimize")
    return parser


def _fail(message: str, *, all_ranks: bool = True) -> None:
    # Other ranks speak too: when rank 1 fails first, the launcher SIGTERMs
    # rank 0 before it reaches the same error, and rank 1's line is the reason.
    if rank() == 0:
        print(f"wbsweep.trial: error: {message}", file=sys.stderr, flush=True)
    elif all_ranks or os.environ.get("WBSWEEP_DEBUG") == "1":
        print(f"wbsweep.trial: error: [rank {rank()}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run one trial from the command line; returns the process exit code."""
    die_with_parent()
    signal.signal(signal.SIGTERM, _on_sigterm)
    options = _parser().parse_args(argv)
    debug = os.environ.get("WBSWEEP_DEBUG") == "1"
    sweep_path = os.path.abspath(options.sweep_file)
    try:
        sweep = load_sweep_file(sweep_path)
        params = read_params(options.params_file)
        run_trial(
            sweep,
            params,
            run_id=_params_run_id(options.params_file),
            metric=options.metric,
            goal=options.goal,
            reporter=reporter_from_env(),
        )
        return 0
    except _Terminated:
        # Only rank 0 says so: every rank gets the signal, one line is enough.
        _fail("terminated by SIGTERM", all_ranks=False)
        return EXIT_TERMINATED
    except WbsweepError as exc:
        if debug:
            traceback.print_exc()
        _fail(str(exc))
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - user code: one line unless debugging
        if debug:
            traceback.print_exc()
        _fail(describe_error(exc, sweep_path))
        return EXIT_FAILED
    finally:
        _destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
