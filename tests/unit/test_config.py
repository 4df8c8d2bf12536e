"""The whole sweep config: defaults, precedence, command, validation."""

from __future__ import annotations

import enum
import json
import os

import pytest
import yaml

import sweeps
from wbsweep.config import build_sweep_config, hyperband, normalize_goal, trial_command
from wbsweep.errors import ConfigError
from wbsweep.shape import TrialShape, sweep_shape
from wbsweep.space import Space, translate

PARAMS = {
    "learning_rate": {"distribution": "log_uniform_values", "min": 1e-6, "max": 1e-4},
    "num_train_epochs": {"distribution": "int_uniform", "min": 1, "max": 3},
}
SPACE = Space(parameters=PARAMS, sweep_defaults={})
SWEEP_FILE = "/abs/sweeps/my_sweep.py"


def config_error(**kwargs) -> str:
    kwargs.setdefault("sweep_file", SWEEP_FILE)
    space = kwargs.pop("space", SPACE)
    with pytest.raises(ConfigError) as info:
        build_sweep_config(space, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults():
    assert build_sweep_config(SPACE, sweep_file=SWEEP_FILE) == {
        "program": SWEEP_FILE,
        "method": "random",
        "metric": {"name": "objective", "goal": "minimize"},
        "parameters": PARAMS,
        "command": trial_command(SWEEP_FILE, metric="objective", goal="minimize"),
    }


def test_trial_command_tokens_exact():
    shape = TrialShape(2, True, "bf16", ("--dynamo_backend", "inductor"))
    assert trial_command("sweeps/s.py", metric="eval_loss", goal="max", shape=shape) == [
        "${env}",
        "${interpreter}",
        "-m",
        "wbsweep.launch",
        "sweeps/s.py",
        "--metric",
        "eval_loss",
        "--goal",
        "maximize",
        "--ranks-per-trial",
        "2",
        "--on",
        "gpu",
        "--mixed-precision",
        "bf16",
        "--accelerate-arg=--dynamo_backend",
        "--accelerate-arg=inductor",
        "${args_json_file}",
    ]
    # Every node reads the same shape back from the recorded command.
    assert sweep_shape(trial_command("s.py", metric="m", goal="min", shape=shape)) == shape


def test_default_command_records_the_sweep_file_relative_to_here_and_the_final_metric():
    # As W&B's `program`: every node resolves it against its own clone of the repository.
    config = build_sweep_config(
        SPACE, sweep_file=os.path.abspath("sweeps/s.py"), metric="eval_f1", direction="maximize"
    )
    assert config["program"] == os.path.join("sweeps", "s.py")
    assert config["command"] == trial_command("sweeps/s.py", metric="eval_f1", goal="maximize")


@pytest.mark.parametrize(
    ("direction", "goal"),
    [("minimize", "minimize"), ("maximize", "maximize"), ("min", "minimize"), ("MAX", "maximize")],
)
def test_direction_mapping(direction, goal):
    config = build_sweep_config(SPACE, sweep_file=SWEEP_FILE, direction=direction)
    assert config["metric"] == {"name": "objective", "goal": goal}
    assert config["command"][-6] == goal


def test_enum_direction():
    class Direction(enum.Enum):  # as older Transformers' OptimizationDirection
        MAXIMIZE = "maximize"

    assert normalize_goal(Direction.MAXIMIZE) == "maximize"


def test_bad_direction():
    assert "direction" in config_error(direction="up")


def test_precedence_kwargs_over_sweep_defaults_over_defaults():
    space = Space(
        parameters=PARAMS,
        sweep_defaults={
            "method": "bayes",
            "metric": {"name": "eval_loss", "goal": "maximize", "target": 0.1},
            "run_cap": 5,
            "name": "from-file",
            "project": "proj",
            "early_terminate": {"type": "hyperband", "min_iter": 2},
        },
    )
    from_defaults = build_sweep_config(space, sweep_file=SWEEP_FILE)
    assert from_defaults["method"] == "bayes"
    assert from_defaults["metric"] == {"name": "eval_loss", "goal": "maximize", "target": 0.1}
    assert from_defaults["run_cap"] == 5
    assert from_defaults["name"] == "from-file"
    assert from_defaults["project"] == "proj"
    assert from_defaults["early_terminate"] == {"type": "hyperband", "min_iter": 2}
    assert from_defaults["command"][-8:-5] == ["eval_loss", "--goal", "maximize"]

    explicit = build_sweep_config(
        space,
        sweep_file=SWEEP_FILE,
        method="random",
        direction="min",
        metric="objective",
        n_trials=9,
        early_terminate=hyperband(min_iter=3, eta=2),
        name="from-cli",
    )
    assert explicit["method"] == "random"
    assert explicit["metric"] == {"name": "objective", "goal": "minimize", "target": 0.1}
    assert explicit["run_cap"] == 9
    assert explicit["name"] == "from-cli"
    assert explicit["early_terminate"] == {"type": "hyperband", "min_iter": 3, "eta": 2}
    assert explicit["command"][-8:-5] == ["objective", "--goal", "minimize"]
    assert space.sweep_defaults["method"] == "bayes"  # the space is not changed


def test_transformers_default_space_builds():
    config = build_sweep_config(translate(None), sweep_file=SWEEP_FILE, n_trials=4)
    assert config["method"] == "random"
    assert config["metric"] == {"name": "objective", "goal": "minimize"}
    assert config["run_cap"] == 4
    assert sweeps.schema_violations_from_proposed_config(config) == []


@pytest.mark.parametrize("n_trials", [0, -3, True, 2.5])
def test_run_cap_must_be_positive(n_trials):
    assert "n_trials" in config_error(n_trials=n_trials)


def test_hyperband_helper_and_passthrough():
    assert hyperband(min_iter=1, eta=2) == {"type": "hyperband", "min_iter": 1, "eta": 2}
    assert hyperband(max_iter=27, s=2) == {"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3}
    with pytest.raises(ConfigError):
        hyperband(eta=2)
    et = {"type": "hyperband", "min_iter": 1, "eta": 2, "strict": True}
    config = build_sweep_config(SPACE, sweep_file=SWEEP_FILE, early_terminate=et)
    assert config["early_terminate"] == et


@pytest.mark.parametrize(
    ("early_terminate", "words"),
    [
        ({"type": "median"}, "hyperband"),
        ("hyperband", "hyperband"),
        ({"type": "hyperband", "min_iter": 0}, "early_terminate: 0 is less than the minimum"),
        ({"type": "hyperband", "min_iter": 1, "eta": 1}, "early_terminate:"),
        ({"type": "hyperband"}, "early_terminate:"),
    ],
)
def test_bad_early_terminate(early_terminate, words):
    assert words in config_error(early_terminate=early_terminate)


def test_user_command_kept_as_is():
    command = ["${env}", "python", "${program}", "${args}"]
    assert build_sweep_config(SPACE, sweep_file=SWEEP_FILE, command=command)["command"] == command
    space = Space(PARAMS, {"command": command, "program": "train.py"})
    config = build_sweep_config(space, sweep_file=SWEEP_FILE)
    assert config["command"] == command
    assert config["program"] == "train.py"


def test_shell_string_command_rejected():
    message = config_error(command="accelerate launch -m wbsweep.trial s.py")
    assert "shell string" in message
    message = config_error(space=Space(PARAMS, {"command": "python train.py ${args}"}))
    assert "shell string" in message


def test_non_string_token_rejected():
    assert "token 1" in config_error(command=["python", 3])


def test_grid_with_continuous_parameter_rejected():
    message = config_error(method="grid")
    assert "'learning_rate' (log_uniform_values)" in message
    assert "num_train_epochs" not in message


def test_grid_accepts_discrete_parameters():
    space = Space(
        {
            "a": {"values": [1, 2]},
            "b": {"value": 3},
            "c": {"distribution": "int_uniform", "min": 1, "max": 2},
            "d": {"distribution": "q_uniform", "min": 0, "max": 4, "q": 2},
            "e": {"parameters": {"f": {"values": ["x"]}}},
        },
        {},
    )
    config = build_sweep_config(space, sweep_file=SWEEP_FILE, method="grid")
    assert sweeps.next_run(config, []) is not None


def test_grid_nested_continuous_named():
    space = Space({"m": {"parameters": {"dropout": {"min": 0.0, "max": 0.5}}}}, {})
    assert "'m.dropout' (uniform)" in config_error(space=space, method="grid")


def test_unknown_method_rejected():
    assert "method" in config_error(method="hyperopt")


def test_schema_violations_collected_in_one_message():
    space = Space(
        {"lr": {"min": 0.1, "max": 0.01}, "bs": {"values": [8]}},
        {"metric": {"name": "objective", "impute": "sometimes"}, "description": 7},
    )
    message = config_error(space=space, early_terminate={"type": "hyperband", "min_iter": 0})
    assert message.startswith("invalid sweep config: ")
    assert "'lr'" in message
    assert "early_terminate:" in message
    assert "'sometimes'" in message
    assert "7 is not of type 'string'" in message
    assert message.count(";") >= 3


def test_name_only_when_given():
    assert "name" not in build_sweep_config(SPACE, sweep_file=SWEEP_FILE)
    assert build_sweep_config(SPACE, sweep_file=SWEEP_FILE, name="s1")["name"] == "s1"


def test_json_and_yaml_round_trip():
    def hp_space(trial):
        trial.suggest_float("learning_rate", 1e-6, 1e-4, log=True)
        trial.suggest_int("per_device_train_batch_size", 8, 32, step=8)
        trial.suggest_categorical("optim", ["adamw_torch", None])

    config = build_sweep_config(
        translate(hp_space),
        sweep_file=SWEEP_FILE,
        method="bayes",
        n_trials=10,
        early_terminate=hyperband(min_iter=1),
        name="round-trip",
    )
    assert json.loads(json.dumps(config)) == config
    dumped = yaml.safe_dump(config)
    assert "!!python" not in dumped
    assert yaml.safe_load(dumped) == config
    assert sweeps.schema_violations_from_proposed_config(config) == []
