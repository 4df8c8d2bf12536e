"""Loading sweep files: the examples load offline, each mistake is one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO

from wbsweep.errors import SweepFileError
from wbsweep.sweepfile import SweepFile, load_sweep_file

EXAMPLES = [
    REPO / "sweeps" / "tiny.py",
    REPO / "sweeps" / "minilm_rotten_tomatoes.py",
    REPO / "sweeps" / "qwen3_docs.py",
    REPO / "tests" / "sweeps" / "record_ranks.py",
]

GOOD = """
def model_init(trial):
    return None

def training_args():
    return None

def datasets():
    return None, None
"""


class RecordingTrial:
    """Answers Optuna-style suggestions with the first choice / the low end."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def suggest_float(self, name: str, low: float, high: float, **kwargs: Any) -> float:
        self.names.append(name)
        return low

    def suggest_int(self, name: str, low: int, high: int, **kwargs: Any) -> int:
        self.names.append(name)
        return low

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.names.append(name)
        return choices[0]


def write(tmp_path: Path, source: str, name: str = "sweep.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def error_of(path: Path | str) -> str:
    with pytest.raises(SweepFileError) as info:
        load_sweep_file(path)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_load_and_trace_their_space(path: Path) -> None:
    sweep = load_sweep_file(path)

    assert isinstance(sweep, SweepFile)
    assert sweep.path == str(path)
    assert callable(sweep.model_init) and callable(sweep.training_args)
    assert callable(sweep.datasets)
    trial = RecordingTrial()
    space = sweep.hp_space(trial)  # type: ignore[operator]
    assert "learning_rate" in space and "learning_rate" in trial.names
    assert sweep.defaults["direction"] in ("minimize", "maximize")


def test_examples_import_nothing_heavy() -> None:
    # `create` loads a sweep file just to read hp_space and SWEEP: it must stay cheap.
    script = f"""
import json, sys
from wbsweep.sweepfile import load_sweep_file
for path in {[str(p) for p in EXAMPLES]!r}:
    load_sweep_file(path)
heavy = sorted(m for m in ("torch", "transformers", "datasets", "wandb") if m in sys.modules)
print(json.dumps(heavy))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(result.stdout) == []


def test_minilm_defaults_maximize_accuracy() -> None:
    sweep = load_sweep_file(REPO / "sweeps" / "minilm_rotten_tomatoes.py")
    assert sweep.defaults["direction"] == "maximize"
    assert sweep.compute_objective is not None
    assert sweep.compute_objective({"eval_accuracy": 0.75, "eval_loss": 0.5}) == 0.75


def test_relative_path_and_optional_names(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    sweep = load_sweep_file("sweep.py")  # tests run in tmp_path
    assert sweep.path == str(tmp_path / "sweep.py")
    assert sweep.hp_space is None and sweep.compute_objective is None
    assert sweep.trainer_kwargs is None and sweep.defaults == {}


def test_hp_space_may_be_a_dict(tmp_path: Path) -> None:
    write(tmp_path, GOOD + "hp_space = {'parameters': {'learning_rate': {'values': [1e-3]}}}\n")
    assert load_sweep_file(tmp_path / "sweep.py").hp_space == {
        "parameters": {"learning_rate": {"values": [1e-3]}}
    }


def test_sibling_import_works_and_sys_path_is_restored(tmp_path: Path) -> None:
    (tmp_path / "helper_for_sweep.py").write_text("VALUE = 42\n")
    write(
        tmp_path, "import helper_for_sweep\nSWEEP = {'n_trials': helper_for_sweep.VALUE}\n" + GOOD
    )
    before = list(sys.path)

    assert load_sweep_file(tmp_path / "sweep.py").defaults == {"n_trials": 42}
    assert sys.path == before


def test_missing_file(tmp_path: Path) -> None:
    message = error_of(tmp_path / "nope.py")
    assert "nope.py" in message and "no such sweep file" in message


def test_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "x = 1\ndef broken(:\n")
    message = error_of(path)
    assert str(path) in message and "SyntaxError" in message and "line 2" in message


def test_missing_module_names_type_message_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "import os\nimport not_a_real_module_xyz\n" + GOOD)
    message = error_of(path)
    assert "ModuleNotFoundError" in message and "not_a_real_module_xyz" in message
    assert "line 2" in message and str(path) in message


def test_error_raised_while_importing(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "\n\nRATE = 1 / 0\n")
    message = error_of(path)
    assert "ZeroDivisionError: division by zero" in message and "line 12" in message


@pytest.mark.parametrize("name", ["model_init", "training_args", "datasets"])
def test_required_function_missing(tmp_path: Path, name: str) -> None:
    source = GOOD.replace(f"def {name}(", f"def not_{name}(")
    message = error_of(write(tmp_path, source))
    assert f"{name}()" in message and "sweep.py" in message


def test_required_name_not_callable(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD + "training_args = {'lr': 1}\n"))
    assert "training_args must be a function, not dict" in message


def test_optional_name_not_callable(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD + "compute_objective = 3\n"))
    assert "compute_objective must be a function" in message


def test_hp_space_of_wrong_type(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD + "hp_space = [1, 2]\n"))
    assert "hp_space must be a function or a dict, not list" in message


def test_sweep_unknown_key_is_named(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD + "SWEEP = {'method': 'grid', 'n_trails': 3}\n"))
    assert "'n_trails'" in message and "sweep.py" in message and "n_trials" in message


def test_sweep_must_be_a_dict(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD + "SWEEP = ['bayes']\n"))
    assert "SWEEP must be a dict, not list" in message
