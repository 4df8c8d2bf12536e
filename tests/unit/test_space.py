"""hp_space -> W&B parameters: mapping, passthrough, errors, and the real sweeps engine."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import yaml

import sweeps
from wbsweep.errors import SpaceError, TrialError
from wbsweep.space import Replay, Space, parameter_violations, replay, to_plain, translate


def one(call):
    """Translate a one-parameter space ``lambda t: call(t)`` and return its spec."""
    params = translate(lambda trial: {"p": call(trial)}).parameters
    assert list(params) == ["p"]
    return params["p"]


def space_error(hp_space) -> str:
    with pytest.raises(SpaceError) as info:
        translate(hp_space)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------ Optuna mapping


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            lambda t: t.suggest_float("p", 0.0, 0.5),
            {"distribution": "uniform", "min": 0.0, "max": 0.5},
        ),
        (
            lambda t: t.suggest_float("p", 0, 1),  # int bounds still give a float range
            {"distribution": "uniform", "min": 0.0, "max": 1.0},
        ),
        (
            lambda t: t.suggest_float("p", 1e-6, 1e-4, log=True),
            {"distribution": "log_uniform_values", "min": 1e-6, "max": 1e-4},
        ),
        (
            lambda t: t.suggest_float("p", 0.0, 0.3, step=0.1),
            {"values": [0.0, 0.1, 0.2, 0.3]},
        ),
        (
            lambda t: t.suggest_float("p", 0.05, 0.3, step=0.1),  # high lowered, as Optuna
            {"values": [0.05, 0.15, 0.25]},
        ),
        (lambda t: t.suggest_float("p", 0.5, 0.5), {"value": 0.5}),
        (
            lambda t: t.suggest_int("p", 1, 6),
            {"distribution": "int_uniform", "min": 1, "max": 6},
        ),
        (
            lambda t: t.suggest_int("p", 16, 128, step=16),
            {"values": [16, 32, 48, 64, 80, 96, 112, 128]},
        ),
        (lambda t: t.suggest_int("p", 1, 10, step=4), {"values": [1, 5, 9]}),
        (lambda t: t.suggest_int("p", 1, 10, 4), {"values": [1, 5, 9]}),  # Optuna 2 style
        (
            lambda t: t.suggest_int("p", 1, 1024, log=True),
            {"distribution": "q_log_uniform_values", "min": 1, "max": 1024, "q": 1},
        ),
        (lambda t: t.suggest_int("p", 3, 3), {"value": 3}),
        (
            lambda t: t.suggest_categorical("p", [16, 32, 64, 128]),
            {"values": [16, 32, 64, 128]},
        ),
        (
            lambda t: t.suggest_categorical("p", ("adamw_torch", None, True, 0.5)),
            {"values": ["adamw_torch", None, True, 0.5]},
        ),
        (
            lambda t: t.suggest_uniform("p", 0.1, 0.2),
            {"distribution": "uniform", "min": 0.1, "max": 0.2},
        ),
        (
            lambda t: t.suggest_loguniform("p", 1e-5, 1e-3),
            {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-3},
        ),
        (
            lambda t: t.suggest_discrete_uniform("p", 0.0, 1.0, 0.25),
            {"values": [0.0, 0.25, 0.5, 0.75, 1.0]},
        ),
    ],
)
def test_optuna_calls_map_to_wandb_distributions(call, expected):
    spec = one(call)
    assert spec == expected
    assert all(type(a) is type(b) for a, b in zip(spec.values(), expected.values(), strict=True))


def test_int_range_types_are_python_ints():
    spec = one(lambda t: t.suggest_int("p", np.int64(2), np.int32(9), step=np.int64(1)))
    assert spec == {"distribution": "int_uniform", "min": 2, "max": 9}
    assert type(spec["min"]) is int and type(spec["max"]) is int


def test_long_stepped_ranges_use_q_uniform_when_aligned():
    assert one(lambda t: t.suggest_int("p", 0, 100_000, step=10)) == {
        "distribution": "q_uniform",
        "min": 0,
        "max": 100_000,
        "q": 10,
    }
    message = space_error(lambda t: t.suggest_int("p", 1, 100_000, step=10))
    assert "'p'" in message


def test_transformers_docs_example():
    def hp_space(trial):
        return {
            "learning_rate": trial.suggest_float("learning_rate", 1e-6, 1e-4, log=True),
            "per_device_train_batch_size": trial.suggest_categorical(
                "per_device_train_batch_size", [16, 32, 64, 128]
            ),
        }

    space = translate(hp_space)
    assert space == Space(
        parameters={
            "learning_rate": {"distribution": "log_uniform_values", "min": 1e-6, "max": 1e-4},
            "per_device_train_batch_size": {"values": [16, 32, 64, 128]},
        },
        sweep_defaults={},
    )


def test_return_value_is_ignored_and_branches_on_answers_are_fine():
    def hp_space(trial):
        optim = trial.suggest_categorical("optim", ["adamw_torch", "sgd"])
        lr = trial.suggest_float("learning_rate", 1e-5, 1e-1, log=True)
        return {"anything": optim if lr > 1e-3 else None}

    assert set(translate(hp_space).parameters) == {"optim", "learning_rate"}


def test_same_name_twice_with_same_range_is_fine():
    def hp_space(trial):
        trial.suggest_int("epochs", 1, 3)
        return {"epochs": trial.suggest_int("epochs", 1, 3)}

    assert translate(hp_space).parameters == {
        "epochs": {"distribution": "int_uniform", "min": 1, "max": 3}
    }


# -------------------------------------------------------------------------- numpy


def numpy_space(trial):
    trial.suggest_float("lr", np.float64(1e-5), np.float32(1e-3), log=True)
    trial.suggest_int("epochs", np.int64(1), np.int64(5))
    trial.suggest_categorical("bs", np.array([8, 16]))
    trial.suggest_categorical("flag", [np.bool_(True), np.bool_(False)])
    trial.suggest_categorical("wd", [np.float64(0.0), np.float64(0.01)])


def assert_plain(data):
    assert json.loads(json.dumps(data)) == data
    dumped = yaml.safe_dump(data)
    assert "numpy" not in dumped and "!!python" not in dumped
    assert yaml.safe_load(dumped) == data


def test_numpy_inputs_become_plain_types():
    space = translate(numpy_space)
    assert space.parameters["bs"] == {"values": [8, 16]}
    assert space.parameters["flag"] == {"values": [True, False]}
    assert type(space.parameters["flag"]["values"][0]) is bool
    assert type(space.parameters["wd"]["values"][1]) is float
    assert type(space.parameters["epochs"]["min"]) is int
    assert_plain(space.parameters)


def test_numpy_in_wandb_dict_is_normalised():
    space = translate(
        {
            "method": "bayes",
            "run_cap": np.int64(4),
            "parameters": {
                "lr": {"min": np.float64(0.1), "max": np.float64(0.2)},
                "bs": {"values": np.array([8, 16])},
            },
        }
    )
    assert space.parameters == {"lr": {"min": 0.1, "max": 0.2}, "bs": {"values": [8, 16]}}
    assert type(space.sweep_defaults["run_cap"]) is int
    assert_plain({"parameters": space.parameters, **space.sweep_defaults})


def test_to_plain_converts_sweeps_engine_output():
    run = sweeps.next_run({"method": "random", "parameters": translate(numpy_space).parameters}, [])
    assert_plain(to_plain(run.config))
    with pytest.raises(TypeError):
        to_plain({"x": object()})


# ---------------------------------------------------------------------- W&B dicts

WANDB_PARAMS = {
    "learning_rate": {"distribution": "uniform", "min": 1e-6, "max": 1e-4},
    "seed": {"distribution": "int_uniform", "min": 1, "max": 40},
    "per_device_train_batch_size": {"values": [4, 8]},
    "model": {"parameters": {"dropout": {"values": [0.0, 0.1]}}},
    "warmup_ratio": {"value": 0.1},
}


def test_wandb_parameters_dict_passes_through():
    space = translate(WANDB_PARAMS)
    assert space == Space(parameters=WANDB_PARAMS, sweep_defaults={})
    assert space.parameters is not WANDB_PARAMS


def test_whole_sweep_config_splits_into_parameters_and_defaults():
    config = {
        "method": "bayes",
        "metric": {"name": "eval_loss", "goal": "minimize"},
        "early_terminate": {"type": "hyperband", "min_iter": 1},
        "run_cap": 8,
        "parameters": WANDB_PARAMS,
    }
    space = translate(config)
    assert space.parameters == WANDB_PARAMS
    assert space.sweep_defaults == {k: v for k, v in config.items() if k != "parameters"}


def test_callable_returning_wandb_config_is_used_as_dict():
    def hp_space(trial):  # what Transformers' W&B backend expects
        return {"method": "grid", "parameters": {"seed": {"values": [1, 2]}}}

    space = translate(hp_space)
    assert space.parameters == {"seed": {"values": [1, 2]}}
    assert space.sweep_defaults == {"method": "grid"}


def test_none_is_transformers_default_space():
    from transformers.trainer_utils import default_hp_space_wandb

    expected = default_hp_space_wandb(None)
    space = translate(None)
    assert space.parameters == expected["parameters"]
    assert space.sweep_defaults == {k: v for k, v in expected.items() if k != "parameters"}


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("hp_space", "name", "words"),
    [
        (lambda t: t.suggest_float("lr", 0.1, 0.01), "lr", "greater than"),
        (lambda t: t.suggest_int("epochs", 5, 1), "epochs", "greater than"),
        (lambda t: t.suggest_float("lr", 0.0, 1.0, log=True), "lr", "log"),
        (lambda t: t.suggest_int("bs", 0, 64, log=True), "bs", "log"),
        (lambda t: t.suggest_float("lr", 0.1, 1.0, step=0.1, log=True), "lr", "step"),
        (lambda t: t.suggest_int("bs", 1, 64, step=2, log=True), "bs", "step"),
        (lambda t: t.suggest_float("wd", 0.0, 1.0, step=0), "wd", "step"),
        (lambda t: t.suggest_int("epochs", 1.5, 3), "epochs", "integer"),
        (lambda t: t.suggest_float("lr", "a", 1.0), "lr", "not a number"),
        (lambda t: t.suggest_categorical("optim", []), "optim", "empty"),
        (lambda t: t.suggest_categorical("layers", [[1, 2], [3]]), "layers", "not a str"),
        (lambda t: t.suggest_categorical("optim", "adam"), "optim", "list"),
    ],
)
def test_bad_suggestions_name_the_parameter(hp_space, name, words):
    message = space_error(hp_space)
    assert f"'{name}'" in message
    assert words in message


def test_duplicate_name_with_different_ranges():
    def hp_space(trial):
        trial.suggest_float("lr", 1e-5, 1e-3)
        trial.suggest_float("lr", 1e-5, 1e-2)

    assert "'lr'" in space_error(hp_space)


def test_range_depending_on_another_answer():
    def hp_space(trial):
        layers = trial.suggest_int("layers", 1, 4)
        trial.suggest_int("heads", 1, layers)

    assert "'heads'" in space_error(hp_space)


def optimizer_space(trial):
    """An optimizer choice with an optimizer-specific param on one branch only."""
    optim = trial.suggest_categorical("optim", ["adamw_torch", "sgd", "adafactor"])
    params = {"optim": optim, "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-2)}
    if optim == "sgd":  # the second choice: seen on the second pass
        params["momentum"] = trial.suggest_float("momentum", 0.0, 0.99)
    return params


def test_conditional_space_is_the_union_of_its_branches():
    assert translate(optimizer_space).parameters == {
        "optim": {"values": ["adamw_torch", "sgd", "adafactor"]},
        "learning_rate": {"distribution": "uniform", "min": 1e-5, "max": 1e-2},
        "momentum": {"distribution": "uniform", "min": 0.0, "max": 0.99},
    }


def test_branch_only_on_a_high_bound_or_a_third_choice_is_seen():
    def hp_space(trial):
        model = trial.suggest_categorical("model", ["bert", "distilbert", "roberta"])
        if model == "roberta":
            trial.suggest_float("dropout", 0.0, 0.5)
        if trial.suggest_float("lr", 1e-5, 1e-2, log=True) > 1e-3:
            trial.suggest_int("warmup_steps", 0, 100)
        return {}

    assert set(translate(hp_space).parameters) == {"model", "dropout", "lr", "warmup_steps"}


def test_a_name_with_another_range_on_another_branch_is_refused():
    def hp_space(trial):
        if trial.suggest_categorical("optim", ["adamw_torch", "sgd"]) == "sgd":
            return {"learning_rate": trial.suggest_float("learning_rate", 1e-3, 1e-1)}
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3)}

    assert "parameter 'learning_rate' is suggested with different ranges" in space_error(hp_space)


# -------------------------------------------------------------------------- replay


def test_replay_applies_derived_values():
    def hp_space(trial):
        return {"per_device_train_batch_size": 2 ** trial.suggest_int("log2_bs", 3, 5)}

    replayed = replay(hp_space, {"log2_bs": 4.0})  # W&B's JSON may hand ints back as floats
    assert replayed == Replay(returned={"per_device_train_batch_size": 16}, read={"log2_bs"})


def test_replay_reads_only_its_branch():
    sgd = replay(optimizer_space, {"optim": "sgd", "learning_rate": 0.01, "momentum": 0.9})
    assert sgd is not None and sgd.returned["momentum"] == 0.9
    adam = replay(optimizer_space, {"optim": "adamw_torch", "learning_rate": 0.01, "momentum": 0.9})
    assert adam is not None
    assert adam.returned == {"optim": "adamw_torch", "learning_rate": 0.01}
    assert adam.read == {"optim", "learning_rate"}


def test_replay_answers_with_the_choice_itself():
    def hp_space(trial):
        return {"accum": trial.suggest_categorical("accum", [1, 2.5, None])}

    # W&B's JSON may hand the choice 1 back as 1.0: the trial still gets the int.
    assert type(replay(hp_space, {"accum": 1.0}).returned["accum"]) is int
    assert replay(hp_space, {"accum": None}).returned == {"accum": None}


def test_nothing_to_replay_for_a_wandb_space():
    wandb_space = {"parameters": {"learning_rate": {"values": [0.1, 0.2]}}}
    assert replay(wandb_space, {"learning_rate": 0.1}) is None
    assert replay(lambda trial: wandb_space, {"learning_rate": 0.1}) is None
    assert replay(None, {"learning_rate": 0.1}) is None


@pytest.mark.parametrize(
    ("hp_space", "expected"),
    [
        (lambda t: {"lr": t.suggest_float("lr", 0, 1), "x": t.suggest_int("x", 0, 3)},
         "hp_space(trial) asks for 'x', which is not a parameter of this sweep"),
        (lambda t: t.suggest_float("lr", 0, 1),
         "hp_space(trial) returned float, not the dict of params to apply"),
        (lambda t: {"lr": t.suggest_float("lr", 0, 1) / 0},
         "replaying hp_space(trial) raised ZeroDivisionError: float division by zero"),
    ],
)  # fmt: skip
def test_replay_errors_are_one_line(hp_space, expected):
    with pytest.raises(TrialError) as info:
        replay(hp_space, {"lr": 0.5})
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_a_missing_param_is_not_hidden_by_user_code():
    def hp_space(trial):
        with contextlib.suppress(Exception):
            trial.suggest_int("layers", 1, 4)
        return {"lr": trial.suggest_float("lr", 0, 1)}

    with pytest.raises(TrialError, match="'layers'"):
        replay(hp_space, {"lr": 0.5})


def test_unsupported_trial_method_named():
    def hp_space(trial):
        trial.suggest_float("lr", 1e-5, 1e-3)
        trial.report(0.5, step=1)

    message = space_error(hp_space)
    assert "trial.report" in message


def test_unsupported_trial_method_named_even_when_user_swallows_errors():
    def hp_space(trial):
        with contextlib.suppress(Exception):
            trial.set_user_attr("a", 1)
        trial.suggest_float("lr", 1e-5, 1e-3)

    assert "trial.set_user_attr" in space_error(hp_space)


def test_error_raised_by_user_function_is_wrapped():
    def hp_space(trial):
        raise RuntimeError("boom\nsecond line")

    assert space_error(hp_space) == (
        "hp_space: tracing hp_space(trial) raised RuntimeError: boom second line"
    )


def test_callable_returning_nothing():
    assert "no parameters" in space_error(lambda trial: None)


def test_not_a_space():
    assert "got int" in space_error(3)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"lr": {"min": 0.1, "max": 0.01}}, "lr"),
        ({"lr": {"distribution": "log_uniform_values", "min": 0.0, "max": 1.0}}, "lr"),
        ({"bs": {"values": []}}, "bs"),
        ({"bs": {"values": [1], "choices": [2]}}, "bs"),
        ({"bs": 8}, "bs"),
        ({"bs": {"distribution": "int_uniform", "min": 1.5, "max": 8}}, "bs"),
        ({"m": {"parameters": {"drop": {"vals": [1]}}}}, "m.drop"),
    ],
)
def test_bad_wandb_dicts_name_the_parameter(params, name):
    message = space_error(params)
    assert f"'{name}'" in message


def test_all_violations_reported_in_one_message():
    message = space_error(
        {
            "lr": {"min": 0.1, "max": 0.01},
            "bs": {"values": []},
            "wd": {"distribution": "normal", "sigma": -1},
            "ok": {"values": [1]},
        }
    )
    assert "'lr'" in message and "'bs'" in message and "'wd'" in message
    assert "'ok'" not in message
    assert message.count(";") >= 2


def test_parameter_violations_empty_for_valid_space():
    assert parameter_violations(WANDB_PARAMS) == []
    assert parameter_violations({}) != []


# ------------------------------------------------------------ the real sweeps engine


def engine_space(trial):
    trial.suggest_float("learning_rate", 1e-6, 1e-4, log=True)
    trial.suggest_float("warmup_ratio", 0.0, 0.2)
    trial.suggest_float("weight_decay", 0.0, 0.3, step=0.1)
    trial.suggest_int("num_train_epochs", 1, 5)
    trial.suggest_int("per_device_train_batch_size", 8, 64, step=8)
    trial.suggest_int("gradient_accumulation_steps", 1, 64, log=True)
    trial.suggest_categorical("lr_scheduler_type", ["linear", "cosine"])


def check_run(config, params):
    for name, spec in params.items():
        value = config[name]["value"]
        if "values" in spec:
            assert value in spec["values"]
        elif spec.get("distribution") in ("int_uniform", "q_log_uniform_values"):
            assert float(value).is_integer() and isinstance(to_plain(value), int)
            assert spec["min"] <= value <= spec["max"]
        else:
            assert isinstance(value, float)
            assert spec["min"] <= value <= spec["max"]


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_translated_space_runs_in_sweeps_engine(method):
    params = translate(engine_space).parameters
    config = {"method": method, "metric": {"name": "objective"}, "parameters": params}
    runs = []
    for i in range(12):
        run = sweeps.next_run(config, runs, validate=True)
        check_run(run.config, params)
        run.state = sweeps.RunState.finished
        run.summary_metrics = {"objective": float(i)}
        run.history = [{"objective": float(i)}]
        runs.append(run)
    assert type(runs[0].config["num_train_epochs"]["value"]) is int


def test_translated_categorical_and_int_space_runs_in_grid():
    def hp_space(trial):
        trial.suggest_categorical("optim", ["adamw_torch", "sgd"])
        trial.suggest_int("epochs", 1, 3)
        trial.suggest_int("bs", 16, 48, step=16)

    params = translate(hp_space).parameters
    runs = sweeps.next_runs({"method": "grid", "parameters": params}, [], n=100)
    points = {(r.config["optim"]["value"], r.config["epochs"]["value"], r.config["bs"]["value"])
              for r in runs if r is not None}  # fmt: skip
    assert len(points) == 2 * 3 * 3
    assert {p[2] for p in points} == {16, 32, 48}
    assert all(type(p[1]) is int and type(p[2]) is int for p in points)
