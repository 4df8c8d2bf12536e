"""Build the whole W&B sweep config around a translated :class:`~wbsweep.space.Space`.

The config is fixed when the sweep is created and is the same on every node:
method, metric name and goal, ``run_cap``, ``early_terminate``, ``parameters``
and the trial ``command`` as separate argv tokens. What differs per node or
worker reaches the trial through the environment (``WBSWEEP_ACCELERATE_CONFIG``),
read by ``wandb agent``'s ``${envvar:...}`` macro.
"""

from __future__ import annotations

import os
from copy import deepcopy
from typing import Any

from wbsweep.errors import ConfigError
from wbsweep.shape import TrialShape
from wbsweep.space import Space, parameter_violations, to_plain
from wbsweep.values import one_line

__all__ = ["build_sweep_config", "hyperband", "normalize_goal", "recorded_path", "trial_command"]

DEFAULT_METHOD = "random"
DEFAULT_METRIC = "objective"
DEFAULT_GOAL = "minimize"
METHODS = ("random", "grid", "bayes")
_GOALS = {"minimize": "minimize", "min": "minimize", "maximize": "maximize", "max": "maximize"}
# What sweeps' grid search accepts (it turns int_uniform and q_uniform into value lists).
_GRID_TYPES = frozenset(
    {"param_categorical", "param_single_value", "param_int_uniform", "param_quniform"}
)
_PLACEHOLDER = {"_": {"value": 0}}


def normalize_goal(direction: Any, *, what: str = "direction") -> str:
    """Map ``minimize``/``maximize`` (or ``min``/``max``, any case) to a W&B goal.

    Transformers' ``OptimizationDirection`` enum members are accepted too.

    >>> normalize_goal("MAX")
    'maximize'
    """
    text = getattr(direction, "value", direction)
    goal = _GOALS.get(text.lower()) if isinstance(text, str) else None
    if goal is None:
        raise ConfigError(f"{what} must be 'minimize' or 'maximize', got {direction!r}")
    return goal


def trial_command(
    sweep_file: str, *, metric: str, goal: str, shape: TrialShape | None = None
) -> list[str]:
    """The argv every trial runs, as ``wandb agent`` macros and literal tokens.

    ``${env}``, ``${interpreter}`` and ``${args_json_file}`` are filled in by
    ``wandb agent`` (or the local worker); :mod:`wbsweep.launch` then finds the
    sweep file and this node's accelerate settings and runs ``accelerate launch``
    in the trial ``shape`` (default: 1 rank), which the command records.

    >>> trial_command("sweep.py", metric="objective", goal="min")[2:-1]
    ['-m', 'wbsweep.launch', 'sweep.py', '--metric', 'objective', '--goal', 'minimize', \
'--ranks-per-trial', '1', '--on', 'any']
    """
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"metric must be a non-empty string, got {metric!r}")
    return [
        "${env}", "${interpreter}", "-m", "wbsweep.launch", os.fspath(sweep_file),
        "--metric", metric, "--goal", normalize_goal(goal, what="goal"),
        *(shape or TrialShape()).tokens(), "${args_json_file}",
    ]  # fmt: skip


def recorded_path(sweep_file: str | os.PathLike[str], cwd: str | None = None) -> str:
    """The sweep file as a sweep records it: relative to ``cwd``, as W&B's ``program`` is.

    A file outside ``cwd`` keeps its absolute path.

    >>> recorded_path("/repo/sweeps/a.py", cwd="/repo"), recorded_path("/etc/a.py", cwd="/repo")
    ('sweeps/a.py', '/etc/a.py')
    """
    path = os.path.abspath(os.fspath(sweep_file))
    relative = os.path.relpath(path, cwd or os.getcwd())
    return path if relative.startswith(os.pardir) else relative


def hyperband(
    *,
    min_iter: int | None = None,
    max_iter: int | None = None,
    s: int | None = None,
    eta: float = 3,
    strict: bool | None = None,
) -> dict[str, Any]:
    """An ``early_terminate`` section for W&B's hyperband stopping.

    Give ``min_iter``, or ``max_iter`` and ``s`` (as W&B requires).

    >>> hyperband(min_iter=1, eta=2)
    {'type': 'hyperband', 'min_iter': 1, 'eta': 2}
    """
    if min_iter is None and (max_iter is None or s is None):
        raise ConfigError("hyperband needs min_iter, or max_iter and s")
    fields = {"min_iter": min_iter, "max_iter": max_iter, "s": s, "eta": eta, "strict": strict}
    return {"type": "hyperband", **{k: v for k, v in fields.items() if v is not None}}


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _argv(command: Any) -> list[str]:
    if isinstance(command, str):
        raise ConfigError(f"command must be a list of argv tokens, not a shell string: {command!r}")
    if not isinstance(command, list | tuple) or not command:
        raise ConfigError(f"command must be a non-empty list of strings, got {command!r}")
    for index, token in enumerate(command):
        if not isinstance(token, str):
            raise ConfigError(f"command token {index} ({token!r}) is not a string")
    return list(command)


def _check_early_terminate(terminate: Any) -> None:
    if not isinstance(terminate, dict) or terminate.get("type") != "hyperband":
        raise ConfigError(
            f"early_terminate must be a dict with type 'hyperband', got {terminate!r}"
        )
    if "min_iter" not in terminate and not {"max_iter", "s"} <= terminate.keys():
        raise ConfigError("early_terminate: hyperband needs min_iter, or max_iter and s")


def _flat(parameters: dict, prefix: str = "") -> list[tuple[str, dict]]:
    out = []
    for name, spec in parameters.items():
        if isinstance(spec, dict) and isinstance(spec.get("parameters"), dict):
            out.extend(_flat(spec["parameters"], f"{prefix}{name}."))
        else:
            out.append((f"{prefix}{name}", spec))
    return out


def _grid_problem(parameters: dict) -> str | None:
    from sweeps.config import fill_parameter

    bad = []
    for name, spec in _flat(parameters):
        try:
            filled = fill_parameter(name, spec)
        except ValueError:
            continue  # malformed; the schema check reports it
        if filled is not None and filled[0] not in _GRID_TYPES:
            kind = filled[1].get("distribution", "categorical with probabilities")
            bad.append(f"'{name}' ({kind})")
    if not bad:
        return None
    return (
        "method 'grid' needs discrete parameters (values, value, int_uniform or q_uniform); "
        f"continuous: {', '.join(bad)}"
    )


def _hyperband_detail(config: dict, violations: list[str]) -> list[str]:
    """Swap the schema's vague ``oneOf`` message for the specific hyperband one."""
    import jsonschema
    from sweeps.config import fill_validate_early_terminate

    if not violations:
        return []
    try:
        fill_validate_early_terminate({"early_terminate": config["early_terminate"]})
    except jsonschema.ValidationError as exc:
        detail = one_line(exc.message)
        return [detail] + [
            one_line(m) for m in violations if "oneOf" not in m and "any of" not in m
        ]
    return [one_line(m) for m in violations]


def _violations(config: dict) -> list[str]:
    from sweeps.config import schema_violations_from_proposed_config as check

    problems = list(parameter_violations(config.get("parameters")))
    early = []
    if "early_terminate" in config:
        probe = {"method": "random", "parameters": _PLACEHOLDER}
        early = check({**probe, "early_terminate": config["early_terminate"]})
        problems.extend(f"early_terminate: {m}" for m in _hyperband_detail(config, early))
    rest = check({**config, "parameters": _PLACEHOLDER})
    problems.extend(one_line(m) for m in rest if m not in early)
    return problems


def build_sweep_config(
    space: Space,
    *,
    sweep_file: str,
    method: str | None = None,
    direction: str | None = None,
    metric: str | None = None,
    n_trials: int | None = None,
    early_terminate: dict | None = None,
    name: str | None = None,
    command: list[str] | None = None,
    shape: TrialShape | None = None,
) -> dict:
    """The whole W&B sweep config, validated with the ``sweeps`` package's schema.

    Each setting comes from the keyword argument when given, else from
    ``space.sweep_defaults`` (a whole sweep config passed as ``hp_space``), else
    from the defaults: method ``random``, metric ``objective``, goal ``minimize``.
    ``command`` defaults to :func:`trial_command` on the sweep file's path
    relative to the working directory (:func:`recorded_path`); ``program`` is
    that path too unless the sweep defaults name one.

    Args:
        space: The translated search space.
        sweep_file: Path of the sweep file every trial runs.
        method: ``random``, ``grid`` or ``bayes``.
        direction: ``minimize``/``maximize`` (or ``min``/``max``); the W&B goal.
        metric: Name the objective is logged under.
        n_trials: The sweep's ``run_cap``.
        early_terminate: A W&B ``early_terminate`` section, see :func:`hyperband`.
        name: The sweep's display name.
        command: The trial argv (tokens, never a shell string).
        shape: The trial shape the default ``command`` records.

    Returns:
        A dict of plain JSON types, ready for ``wandb.sweep`` or the local store.

    Raises:
        ConfigError: A setting is invalid; all schema violations are listed in
            one line.

    >>> from wbsweep.space import Space
    >>> cfg = build_sweep_config(Space({"lr": {"values": [0.1]}}, {}), sweep_file="s.py")
    >>> cfg["method"], cfg["metric"], cfg["program"]
    ('random', {'name': 'objective', 'goal': 'minimize'}, 's.py')
    """
    defaults = deepcopy(space.sweep_defaults)
    sweep_path = recorded_path(sweep_file)

    def pick(key: str, explicit: Any, fallback: Any = None) -> Any:
        # Always consume the default, so the pass-through below cannot bring it back.
        from_defaults = defaults.pop(key, None)
        if explicit is not None:
            return explicit
        return from_defaults if from_defaults is not None else fallback

    chosen = pick("method", method, DEFAULT_METHOD)
    if chosen not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {chosen!r}")
    metric_section = pick("metric", None, {})
    if not isinstance(metric_section, dict):
        raise ConfigError(f"metric must be a dict with a name, got {metric_section!r}")
    metric_name = metric if metric is not None else metric_section.get("name", DEFAULT_METRIC)
    if not isinstance(metric_name, str) or not metric_name:
        raise ConfigError(f"metric must be a non-empty string, got {metric_name!r}")
    if direction is not None:
        goal = normalize_goal(direction)
    else:
        goal = normalize_goal(metric_section.get("goal", DEFAULT_GOAL), what="metric.goal")
    run_cap = defaults.pop("run_cap", None)
    if n_trials is not None:
        run_cap = _positive_int(n_trials, "n_trials")
    elif run_cap is not None:
        run_cap = _positive_int(run_cap, "run_cap")
    terminate = pick("early_terminate", early_terminate)
    if terminate is not None:
        _check_early_terminate(terminate)
    argv = pick("command", command)

    config: dict[str, Any] = {}
    sweep_name = pick("name", name)
    if sweep_name is not None:
        config["name"] = sweep_name
    config["program"] = pick("program", None, sweep_path)
    config["method"] = chosen
    config["metric"] = {**metric_section, "name": metric_name, "goal": goal}
    if run_cap is not None:
        config["run_cap"] = run_cap
    if terminate is not None:
        config["early_terminate"] = terminate
    config["parameters"] = deepcopy(space.parameters)
    config["command"] = (
        trial_command(sweep_path, metric=metric_name, goal=goal, shape=shape)
        if argv is None
        else _argv(argv)
    )
    config.update(defaults)  # project, entity, description, ...: passed through

    try:
        config = to_plain(config)
    except TypeError as exc:
        raise ConfigError(f"sweep config is not plain JSON data: {exc}") from exc
    if chosen == "grid" and isinstance(config["parameters"], dict):
        problem = _grid_problem(config["parameters"])
        if problem:
            raise ConfigError(problem)
    problems = _violations(config)
    if problems:
        raise ConfigError("invalid sweep config: " + "; ".join(problems))
    return config
