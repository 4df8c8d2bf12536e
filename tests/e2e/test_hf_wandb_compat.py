"""Transformers' own W&B search test, as a user with ``import wbsweep`` in front would run it.

Transformers checks its W&B backend with one call sequence: a regression model
whose ``model_init(config)`` reads two model params ``a`` and ``b`` (``config``
is ``None`` when the Trainer is built), a W&B sweep config from ``hp_space``
with an empty ``metric``, ``hyperparameter_search(direction="minimize",
n_trials=4)``, then, after dropping ``WANDB_ENTITY``/``WANDB_PROJECT`` as a
restarted process would, a second call with ``sweep_id=best.run_summary`` that
continues the same sweep. The same sequence runs here on both backends, chosen
as a user's would be by ``auto``: local with no W&B login, W&B when the W&B
protocol double (``tests/wandb_double``, real SDK, real HTTP) is logged in.

One assertion differs on purpose: Transformers' backend returns the run's whole
W&B config as ``hyperparameters`` (the sweep's ``assignments`` and ``metric``
leak in); wbsweep returns the sweep's params only.

Slow: four short trainings per backend, in this process.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel, Trainer, TrainingArguments

import wbsweep  # noqa: F401  (installs the plugin, as a user's script does)
from wbsweep.backends import backend_for_sweep

# Tiny models train on one torch thread here and in every rank (tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


class LineConfig(PretrainedConfig):
    """``y = a * x + b``, starting from the trial's ``a`` and ``b``."""

    model_type = "wbsweep-test-line"

    def __init__(self, a: float = 0.0, b: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.a = a
        self.b = b


class LineModel(PreTrainedModel):
    config_class = LineConfig

    def __init__(self, config: LineConfig) -> None:
        super().__init__(config)
        self.a = nn.Parameter(torch.tensor(float(config.a)))
        self.b = nn.Parameter(torch.tensor(float(config.b)))

    def _init_weights(self, module: nn.Module) -> None:
        pass  # a and b start where the trial put them

    def forward(self, input_x: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
        y = self.a * input_x + self.b
        if labels is None:
            return (y,)
        return (nn.functional.mse_loss(y, labels), y)


def points(n: int, seed: int) -> list[dict[str, float]]:
    """Noisy samples of ``y = 2x + 3``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=generator)
    y = 2 * x + 3 + 0.1 * torch.randn(n, generator=generator)
    return [{"input_x": float(xi), "labels": float(yi)} for xi, yi in zip(x, y, strict=True)]


def hp_space(trial: Any) -> dict[str, Any]:
    return {
        "method": "random",
        "metric": {},
        "parameters": {
            "a": {"distribution": "uniform", "min": 1e-6, "max": 1e-4},
            "b": {"distribution": "int_uniform", "min": 1, "max": 6},
        },
    }


@pytest.mark.parametrize("backend", ["local", "wandb"])
def test_transformers_wandb_search_sequence(
    backend: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    if backend == "wandb":
        request.getfixturevalue("wandb_double")  # a logged-in W&B: `auto` picks it
        # The SDK's in-process agent asks for the next run every 5 s: a timing
        # constant only, shortened so four trials take seconds, not twenty.
        monkeypatch.setattr("wandb.agents.pyagent.Agent.HEARTBEAT_SLEEP_SECONDS", 0.2)
    seen: list[dict[str, Any] | None] = []

    def model_init(config: dict[str, Any] | None) -> LineModel:
        seen.append(None if config is None else {"a": config["a"], "b": config["b"]})
        a, b = (0, 0) if config is None else (config["a"], config["b"])
        return LineModel(LineConfig(a=a, b=b))

    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), learning_rate=0.1, logging_steps=1,
        eval_strategy="epoch", save_strategy="epoch", num_train_epochs=4,
        disable_tqdm=True, load_best_model_at_end=True, run_name="test",
        use_cpu=True,
    )  # fmt: skip
    trainer = Trainer(
        model_init=model_init, args=args, train_dataset=points(64, 1), eval_dataset=points(32, 2)
    )
    assert seen == [None]  # the Trainer built its first model with no trial
    search = {"direction": "minimize", "hp_space": hp_space, "backend": "wandb", "n_trials": 4}

    best = trainer.hyperparameter_search(**search)

    assert best.run_id is not None
    assert best.run_summary is not None
    assert math.isfinite(best.objective)
    # Transformers' backend leaks "assignments" and "metric" in here; wbsweep does not.
    assert set(best.hyperparameters) == {"a", "b"}
    assert 1e-6 <= best.hyperparameters["a"] <= 1e-4
    assert best.hyperparameters["b"] in range(1, 7)
    found, sweep_id = backend_for_sweep(best.run_summary)
    assert found.name == backend
    runs = found.runs(sweep_id)
    assert [r.state.value for r in runs] == ["finished"] * 4
    # Every trial's model was built from that trial's a and b.
    assert seen[1:] == [{"a": r.params["a"], "b": r.params["b"]} for r in runs]

    # As after a restart: nothing but run_summary says which sweep to continue.
    os.environ.pop("WANDB_ENTITY", None)
    os.environ.pop("WANDB_PROJECT", None)
    again = trainer.hyperparameter_search(**search, sweep_id=best.run_summary)

    assert again.run_id is not None
    assert again.run_summary == best.run_summary
    assert set(again.hyperparameters) == {"a", "b"}
    assert [r.id for r in found.runs(sweep_id)] == [r.id for r in runs]  # the same sweep
