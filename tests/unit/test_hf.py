"""The Transformers plugin's pure parts: install, options, the sweep config, params tracking.

Searches that train (in this process, as a script, under ``accelerate launch``)
are in ``tests/e2e/test_hf_search.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

import wbsweep.hf
from wbsweep.errors import ConfigError
from wbsweep.hf.search import parse_options, sweep_config
from wbsweep.params import RecordingParams, unused_params

# ---------------------------------------------------------------- install


def test_install_is_idempotent_and_uninstall_restores() -> None:
    from transformers.hyperparameter_search import ALL_HYPERPARAMETER_SEARCH_BACKENDS as table
    from transformers.trainer_utils import HPSearchBackend

    wbsweep.hf.install()
    wbsweep.hf.install()
    assert table[HPSearchBackend.WANDB].__module__ == "wbsweep.hf.backend"
    assert wbsweep.hf.is_installed()
    wbsweep.hf.uninstall()
    assert table[HPSearchBackend.WANDB].__module__ == "transformers.hyperparameter_search"
    wbsweep.hf.install()
    assert wbsweep.hf.is_installed()


# ---------------------------------------------------------------- pure parts


def test_options_defaults_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    options = parse_options(5, "maximize", {"wbsweep_backend": "local"})
    sweep = options.sweep
    assert (options.backend, sweep.n_trials, sweep.direction, options.count) == (
        "local", 5, "maximize", None
    )  # fmt: skip
    joined = parse_options(5, "minimize", {"sweep_id": "e/p/abc", "wbsweep_count": 2})
    assert (joined.backend, joined.sweep_id, joined.count) == ("wandb", "e/p/abc", 2)
    monkeypatch.setenv("WBSWEEP_SWEEP_ID", "zz")
    monkeypatch.setenv("WBSWEEP_COUNT", "1")
    from_env = parse_options(5, "minimize", {"wbsweep_backend": "local"})
    assert (from_env.sweep_id, from_env.count) == ("zz", 1)
    with pytest.raises(TypeError, match="sweeep_id"):
        parse_options(5, "minimize", {"sweeep_id": "x"})
    with pytest.raises(ConfigError, match="single-objective"):
        parse_options(5, ["minimize", "maximize"], {})


def test_sweep_config_from_the_docs_space_and_an_optuna_space() -> None:
    def wandb_hp_space(trial: Any) -> dict[str, Any]:
        return {
            "method": "bayes",
            "metric": {"name": "objective", "goal": "maximize"},
            "parameters": {"learning_rate": {"distribution": "uniform", "min": 1e-6, "max": 1e-4}},
        }

    options = parse_options(7, "minimize", {"wbsweep_backend": "local", "name": "n"})
    config = sweep_config(wandb_hp_space, options)
    assert config["method"] == "bayes"
    # direction wins over the config's goal, as in Transformers' own W&B backend
    assert config["metric"] == {"name": "objective", "goal": "minimize"}
    assert config["run_cap"] == 7 and config["name"] == "n"
    assert config["command"] == ["${env}", "${interpreter}", "${program}", "${args}"]

    def optuna_space(trial: Any) -> dict[str, Any]:
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-6, 1e-4, log=True)}

    options = parse_options(3, "max", {"wbsweep_backend": "local", "metric": "acc"})
    config = sweep_config(optuna_space, options)
    assert config["parameters"] == {
        "learning_rate": {"distribution": "log_uniform_values", "min": 1e-6, "max": 1e-4}
    }
    assert config["metric"] == {"name": "acc", "goal": "maximize"}


def test_recording_params_notes_what_model_init_reads() -> None:
    params = RecordingParams({"a": 1, "b": 2, "c": 3})
    assert params["a"] == 1 and params.get("b") == 2 and "zz" not in params
    assert params.read == {"a", "b", "zz"}
    everything = RecordingParams({"a": 1, "b": 2})
    assert dict(everything) == {"a": 1, "b": 2}
    assert everything.read == {"a", "b"}

    from transformers import TrainingArguments

    args = TrainingArguments(output_dir="o", report_to="none")
    assert unused_params({"learning_rate": 1, "dropout": 0, "typo": 1}, args, {"dropout"}) == [
        "typo"
    ]
