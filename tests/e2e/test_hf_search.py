"""The Transformers plugin: ``trainer.hyperparameter_search(backend="wandb")`` through wbsweep.

In-process tests drive a real ``Trainer`` (a tiny BERT from a config) on the
local backend. The others run ``examples/hf_search_docs.py`` (the docs'
snippet) as users do: as a script and under a 2-rank ``accelerate launch``,
one process making the sweep and the other joining it; on the local store and
against the W&B protocol double. How ``import wbsweep`` installs the plugin is in
``test_hf_install_order.py``.

Slow: every test here trains or starts Python processes. The plugin's pure
parts are in ``tests/unit/test_hf.py``.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO
from wandb_double import WandbDouble

from wbsweep.agent import free_port
from wbsweep.backends import LocalBackend

# Tiny models train on one torch thread here and in every rank (tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

EXAMPLE = REPO / "examples" / "hf_search_docs.py"
PYTHON = sys.executable
ACCELERATE = str(Path(sys.executable).parent / "accelerate")


# ---------------------------------------------------------------- in-process searches

VOCAB, SEQ = 50, 8


def tiny_data(n: int, seed: int) -> Any:
    import torch
    from datasets import Dataset

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (n, SEQ), generator=generator)
    labels = (ids[:, 0] < VOCAB // 2).long()
    return Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": [[1] * SEQ] * n, "labels": labels.tolist()}
    )


def tiny_model(trial: dict[str, Any] | None) -> Any:
    from transformers import BertConfig, BertForSequenceClassification

    params = trial or {}
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=SEQ, num_labels=2,
        hidden_dropout_prob=float(params.get("hidden_dropout_prob", 0.1)),
    )  # fmt: skip
    return BertForSequenceClassification(config)


def tiny_trainer(tmp_path: Path, model_init: Any = tiny_model, **kwargs: Any) -> Any:
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=16,
        save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
        average_tokens_across_devices=False,
    )  # fmt: skip
    return Trainer(
        model_init=model_init, args=args, train_dataset=tiny_data(64, 1),
        eval_dataset=tiny_data(32, 2), **kwargs,
    )  # fmt: skip


def optuna_space(trial: Any) -> dict[str, Any]:
    """Optuna style, with a derived batch size and an AdamW-only param."""
    optim = trial.suggest_categorical("optim", ["adamw_torch", "sgd"])
    space = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        "per_device_train_batch_size": 2 ** trial.suggest_int("log2_bs", 3, 4),
        "hidden_dropout_prob": trial.suggest_float("hidden_dropout_prob", 0.0, 0.3),
        "warmup_typo": trial.suggest_float("warmup_typo", 0.0, 0.1),
        "optim": optim,
    }
    if optim == "adamw_torch":
        space["adam_beta1"] = trial.suggest_float("adam_beta1", 0.8, 0.9)
    return space


def test_local_search_in_process(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    def model_init(trial: dict[str, Any] | None) -> Any:
        if trial is not None:
            batch = trial["per_device_train_batch_size"]
            seen.append(dict(hidden_dropout_prob=trial["hidden_dropout_prob"], batch=batch))
        return tiny_model(trial)

    trainer = tiny_trainer(tmp_path, model_init)
    base_args = trainer.args
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        best = trainer.hyperparameter_search(
            backend="wandb", hp_space=optuna_space, n_trials=2, wbsweep_backend="local",
            compute_objective=lambda m: m["eval_loss"],
        )  # fmt: skip
    store = LocalBackend(os.environ["WBSWEEP_STORE"])
    (sweep,) = store.sweeps()
    runs = store.runs(sweep.id)
    assert len(runs) == 2 and [r.state for r in runs] == ["finished"] * 2
    winner = min(runs, key=lambda r: r.objective)
    assert best.run_id == winner.id
    assert best.objective == pytest.approx(winner.objective)
    # What hp_space returned applied; another branch's param is left out of the BestRun.
    assert best.hyperparameters == {
        k: v for k, v in winner.params.items() if k not in winner.unused_params
    }
    for run in runs:
        assert run.unused_params == ({"adam_beta1"} if run.params["optim"] == "sgd" else set())
    # As Transformers' W&B backend: run_summary is the sweep id, and passing it back
    # (after a restart) joins that sweep; with nothing left to run it says the same.
    assert best.run_summary == sweep.id
    again = trainer.hyperparameter_search(
        backend="wandb", hp_space=optuna_space, n_trials=2, wbsweep_backend="local",
        compute_objective=lambda m: m["eval_loss"], sweep_id=best.run_summary,
    )  # fmt: skip
    assert again == best
    assert len(store.sweeps()) == 1 and len(store.runs(sweep.id)) == 2
    for run in runs:
        assert run.objective == pytest.approx(run.metrics["eval_loss"])
        assert run.started_at is not None
    # model params reach model_init through the trial dict, once per trial
    assert [s["hidden_dropout_prob"] for s in seen] == [
        r.params["hidden_dropout_prob"] for r in runs
    ]
    assert [s["batch"] for s in seen] == [2 ** r.params["log2_bs"] for r in runs]
    # the unused param is reported once, by name; model params are not
    unused = [w for w in caught if "warmup_typo" in str(w.message)]
    assert len(unused) == 1
    assert "hidden_dropout_prob" not in str(unused[0].message)
    # the trainer is back as the user left it
    assert trainer.args is base_args and trainer.model_init is model_init
    assert trainer.hp_search_backend is None


def test_hp_name_names_each_in_process_run_on_the_dashboard(
    wandb_double: WandbDouble, tmp_path: Path
) -> None:
    # A local sweep whose runs go online (WANDB_MODE=online): the W&B double sees them.
    def lr_space(trial: Any) -> dict[str, Any]:
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)}

    trainer = tiny_trainer(tmp_path)
    trainer.hyperparameter_search(
        backend="wandb", hp_space=lr_space, n_trials=2, wbsweep_backend="local",
        hp_name=lambda trial: f"lr-{trial['learning_rate']:.2e}",
    )  # fmt: skip
    (sweep,) = LocalBackend(os.environ["WBSWEEP_STORE"]).sweeps()
    runs = {r.id: r for r in LocalBackend(os.environ["WBSWEEP_STORE"]).runs(sweep.id)}
    seen = wandb_double.runs()
    assert sorted(r["id"] for r in seen) == sorted(runs)
    worker = f"{socket.gethostname()}:{os.getpid()}:hf"
    for run in seen:
        params = runs[run["id"]].params
        assert run["display_name"] == f"lr-{params['learning_rate']:.2e}"
        assert run["tags"] == ["local", worker]
        assert run["group"] == sweep.id  # an unnamed sweep is called by its id
        assert run["sweep"] is None  # no W&B server knows a local sweep
        assert run["config"]["learning_rate"] == pytest.approx(params["learning_rate"])
        assert run["summary"]["objective"] == pytest.approx(runs[run["id"]].objective)


def test_failing_trial_is_recorded_and_the_search_goes_on(tmp_path: Path) -> None:
    def model_init(trial: dict[str, Any] | None) -> Any:
        if trial is not None and trial["per_device_train_batch_size"] == 8:
            raise ValueError("no batch size 8 today")
        return tiny_model(trial)

    def space(trial: Any) -> dict[str, Any]:
        return {
            "method": "grid",
            "parameters": {"per_device_train_batch_size": {"values": [8, 16]}},
        }

    trainer = tiny_trainer(tmp_path, model_init)
    best = trainer.hyperparameter_search(
        backend="wandb", hp_space=space, n_trials=2, wbsweep_backend="local"
    )
    (sweep,) = LocalBackend(os.environ["WBSWEEP_STORE"]).sweeps()
    runs = LocalBackend(os.environ["WBSWEEP_STORE"]).runs(sweep.id)
    assert sorted(r.state for r in runs) == ["failed", "finished"]
    assert best.hyperparameters == {"per_device_train_batch_size": 16}
    assert sweep.config["method"] == "grid"


def test_model_and_model_init_errors_are_transformers_own(tmp_path: Path) -> None:
    from transformers import Trainer

    with pytest.raises(ValueError, match="requires either a `model` or `model_init` argument, but"):
        tiny_trainer(tmp_path, model=tiny_model(None))
    trainer = Trainer(model=tiny_model(None), args=tiny_trainer(tmp_path).args)
    message = "you need to pass your model through a model_init function"
    with pytest.raises(RuntimeError, match=message):
        trainer.hyperparameter_search(backend="wandb", wbsweep_backend="local")
    from wbsweep.hf.backend import WbsweepBackend

    with pytest.raises(RuntimeError, match=message):  # called directly, past Trainer's check
        WbsweepBackend().run(trainer, 1, "minimize", wbsweep_backend="local")


# ---------------------------------------------------------------- the docs' example, as a script

# Runs the example as `python example.py` would, records what each rank's
# Trainer trained with, and writes the BestRun each rank returned.
_WRAPPER = """
import json, os, runpy, sys
import transformers

record = os.environ["HF_TEST_RECORD"]
rank = int(os.environ.get("RANK", "0"))
train = transformers.Trainer.train

def recording_train(self, *args, **kwargs):
    line = {"rank": rank, "world_size": self.args.world_size, "output_dir": self.args.output_dir,
            "learning_rate": self.args.learning_rate,
            "per_device_train_batch_size": self.args.per_device_train_batch_size,
            "hp_search": self.hp_search_backend is not None}
    with open(os.path.join(record, f"rank{rank}.jsonl"), "a") as handle:
        handle.write(json.dumps(line) + "\\n")
    return train(self, *args, **kwargs)

transformers.Trainer.train = recording_train
sys.argv = [sys.argv[1]]
found = runpy.run_path(sys.argv[0], run_name="__main__")
with open(os.path.join(record, f"best{rank}-{os.getpid()}.json"), "w") as handle:
    json.dump(found["best_trial"]._asdict(), handle)
"""


def example_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    record = tmp_path / "record"
    record.mkdir(exist_ok=True)
    # The repository first; what the fixtures put on the path (the W&B double's) kept.
    path = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {
        **os.environ, "HF_TEST_RECORD": str(record), "HF_SEARCH_N_TRIALS": "3",
        "PYTHONPATH": os.pathsep.join(path), **extra,
    }  # fmt: skip


def run_example(tmp_path: Path, env: dict[str, str], *launcher: str) -> None:
    wrapper = tmp_path / "run_example.py"
    wrapper.write_text(_WRAPPER)
    argv = (
        [*launcher, str(wrapper), str(EXAMPLE)]
        if launcher
        else [PYTHON, str(wrapper), str(EXAMPLE)]
    )
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


def run_example_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """The example as ``python example.py`` runs it (``__main__``), but in this process.

    With ``env`` set, and the wrapper's recording ``Trainer.train`` undone afterwards.
    """
    import runpy

    import transformers

    wrapper = tmp_path / "run_example.py"
    wrapper.write_text(_WRAPPER)
    (tmp_path / "record").mkdir(exist_ok=True)
    for key, value in {"HF_TEST_RECORD": str(tmp_path / "record"), **env}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", [str(wrapper), str(EXAMPLE)])
    monkeypatch.setattr(transformers.Trainer, "train", transformers.Trainer.train)
    runpy.run_path(str(wrapper), run_name="__main__")


def records(tmp_path: Path) -> list[dict[str, Any]]:
    lines = []
    for path in (tmp_path / "record").glob("rank*.jsonl"):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return [line for line in lines if line["hp_search"]]


def bests(tmp_path: Path) -> list[dict[str, Any]]:
    files = sorted((tmp_path / "record").glob("best*.json"), key=lambda p: p.stat().st_mtime)
    return [json.loads(p.read_text()) for p in files]


def assert_is_best_of(best: dict[str, Any], runs: list[Any]) -> None:
    finished = [r for r in runs if r.state == "finished" and math.isfinite(r.objective)]
    winner = min(finished, key=lambda r: r.objective)
    assert best["run_id"] == winner.id
    assert best["objective"] == pytest.approx(winner.objective)
    assert best["hyperparameters"] == winner.params


def two_ranks() -> list[str]:
    return [
        ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(free_port()),
    ]  # fmt: skip


def trained_with(line: dict[str, Any], params: dict[str, Any]) -> bool:
    return line["learning_rate"] == pytest.approx(params["learning_rate"]) and (
        line["per_device_train_batch_size"] == params["per_device_train_batch_size"]
    )


@pytest.mark.slow
def test_docs_example_local_on_two_ranks_then_a_second_process_joins(tmp_path: Path) -> None:
    """The example under a 2-rank ``accelerate launch`` on the local store, then as a script.

    The 2-rank job (``WBSWEEP_COUNT=2``) makes one sweep of ``n_trials`` runs, though both
    ranks call ``hyperparameter_search``, and runs two: both ranks train every trial with
    the run's params, rank 0 alone talks to the store and W&B, and every rank returns the
    same ``BestRun``. Then the example as a plain script joins by ``WBSWEEP_SWEEP_ID`` and
    runs the last run; its ``BestRun`` covers both processes' runs.
    """
    store = LocalBackend(os.environ["WBSWEEP_STORE"])
    offline = Path(os.environ["WANDB_DIR"], "wandb")
    env = example_env(tmp_path, WBSWEEP_BACKEND="local", WBSWEEP_COUNT="2")
    run_example(tmp_path, {**env, "ACCELERATE_USE_CPU": "true"}, *two_ranks())
    (sweep,) = store.sweeps()  # one sweep, though two ranks called hyperparameter_search
    assert sweep.config["run_cap"] == 3
    ranked = store.runs(sweep.id)
    assert len(ranked) == 2 and {r.state for r in ranked} == {"finished"}
    assert len({r.worker for r in ranked}) == 1  # the 2-rank job is one worker
    trained = records(tmp_path)
    assert len(trained) == 2 * 2
    for run in ranked:
        lines = [t for t in trained if t["output_dir"].endswith(f"run-{run.id}")]
        assert sorted(t["rank"] for t in lines) == [0, 1]
        for line in lines:
            assert line["world_size"] == 2 and trained_with(line, run.params)
    rank0, rank1 = bests(tmp_path)
    assert rank0 == rank1  # every rank returns the same BestRun
    assert_is_best_of(rank0, ranked)
    # only rank 0 made W&B runs: one offline run per trial
    assert len(list(offline.glob("offline-run-*"))) == 2

    env = example_env(tmp_path, WBSWEEP_BACKEND="local", WBSWEEP_SWEEP_ID=sweep.id)
    run_example(tmp_path, env)
    assert len(store.sweeps()) == 1
    runs = store.runs(sweep.id)
    assert len(runs) == 3 and {r.state for r in runs} == {"finished"}
    assert len({r.worker for r in runs}) == 2  # both processes contributed
    _, _, joiner = bests(tmp_path)
    assert_is_best_of(joiner, runs)  # the joiner's BestRun covers every process's runs
    assert set(joiner["hyperparameters"]) == {"learning_rate", "per_device_train_batch_size"}
    (last,) = [r for r in runs if r.id not in {m.id for m in ranked}]
    (line,) = [t for t in records(tmp_path) if t["output_dir"].endswith(f"run-{last.id}")]
    assert line["world_size"] == 1 and trained_with(line, last.params)
    assert len(list(offline.glob("offline-run-*"))) == 3


@pytest.mark.slow
def test_docs_example_against_wandb_then_a_second_process_on_two_ranks_joins(
    wandb_double: WandbDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example against W&B (the double), then as a 2-rank script joining its sweep.

    The example (``WBSWEEP_COUNT=1``) registers the sweep and runs one of its two runs;
    it runs in this process (a plain script run is the local test's, and the joiner is
    a fresh script run against W&B). A 2-rank ``accelerate launch`` of the example joins
    by ``entity/project/id`` and runs the other run. One agent per process (rank 1 never
    talks to W&B), one run per trial with its curves and objective, and every rank of
    the joiner returns the same ``BestRun``, which covers both processes' runs and holds
    the sweep's params only.
    """
    extra = {"WBSWEEP_BACKEND": "wandb", "HF_SEARCH_N_TRIALS": "2", "WANDB_PROJECT": "hf"}
    run_example_here(tmp_path, monkeypatch, **extra, WBSWEEP_COUNT="1")
    (sweep,) = wandb_double.sweeps()
    assert sweep["config"]["run_cap"] == 2
    assert sweep["config"]["metric"] == {"name": "objective", "goal": "minimize"}
    (mine,) = wandb_double.runs(sweep["id"])
    (first,) = bests(tmp_path)
    assert first["run_id"] == mine["id"]

    path = f"{wandb_double.entity}/hf/{sweep['id']}"
    monkeypatch.delenv("WBSWEEP_COUNT")
    joiner = {**extra, "WBSWEEP_SWEEP_ID": path, "ACCELERATE_USE_CPU": "true"}
    # Without the WANDB_SERVICE this process's wandb left (as child_env): the joiner starts its own.
    env = {k: v for k, v in example_env(tmp_path).items() if k != "WANDB_SERVICE"}
    env = wandb_double.child_env({**env, **joiner})
    run_example(tmp_path, env, *two_ranks())
    assert len(wandb_double.sweeps()) == 1
    assert len(wandb_double.agents()) == 2  # one per process: rank 0 alone talks to W&B
    runs = wandb_double.runs(sweep["id"])  # and only rank 0 made runs: one per trial
    assert len(runs) == 2 and [r["state"] for r in runs] == ["finished"] * 2
    assert len({r["agent"] for r in runs}) == 2
    for run in runs:
        assert math.isfinite(run["summary"]["objective"])
        assert any("train/loss" in row or "eval/loss" in row for row in run["history"])
    winner = min(runs, key=lambda r: r["summary"]["objective"])
    _, rank0, rank1 = bests(tmp_path)
    assert rank0 == rank1
    assert rank0["run_id"] == winner["id"]  # the BestRun covers both processes' runs
    assert rank0["objective"] == pytest.approx(winner["summary"]["objective"])
    assert rank0["hyperparameters"] == {
        k: v for k, v in winner["config"].items() if k in sweep["config"]["parameters"]
    }
    assert rank0["run_summary"] == path
    trained = records(tmp_path)
    assert len(trained) == 1 + 2
    (joined,) = [r for r in runs if r["id"] != mine["id"]]
    lines = [t for t in trained if t["output_dir"].endswith(f"run-{joined['id']}")]
    assert sorted(t["rank"] for t in lines) == [0, 1]
    for line in lines:
        assert line["world_size"] == 2
        assert line["learning_rate"] == pytest.approx(
            joined["raw_config"]["learning_rate"]["value"]
        )


def test_hyperband_stops_a_bad_trial_in_process(tmp_path: Path) -> None:
    from transformers import TrainingArguments

    trainer = tiny_trainer(tmp_path)
    trainer.args = TrainingArguments(
        **{**trainer.args.to_dict(), "num_train_epochs": 4, "eval_strategy": "steps",
           "eval_steps": 2, "logging_steps": 2}
    )  # fmt: skip

    def space(trial: Any) -> dict[str, Any]:
        return {
            "method": "grid",
            "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 2},
            "parameters": {"learning_rate": {"values": [1e-3, 2e-3, 3.0]}},
        }

    best = trainer.hyperparameter_search(
        backend="wandb", hp_space=space, n_trials=3, wbsweep_backend="local"
    )
    store = LocalBackend(os.environ["WBSWEEP_STORE"])
    (sweep,) = store.sweeps()
    runs = store.runs(sweep.id)
    assert [r.params["learning_rate"] for r in runs] == [1e-3, 2e-3, 3.0]
    assert [r.state for r in runs] == ["finished", "finished", "stopped"]
    stopped = store.history(runs[2].id)
    assert 2 <= len(stopped) < len(store.history(runs[0].id))  # it kept what it reported
    assert best.hyperparameters["learning_rate"] in (1e-3, 2e-3)


def test_a_stop_from_wandb_ends_an_in_process_trial_and_the_search_goes_on(
    wandb_double: WandbDouble, tmp_path: Path
) -> None:
    import threading

    from transformers import TrainerCallback, TrainingArguments

    steps: list[tuple[str, int]] = []

    class SlowSteps(TrainerCallback):  # the first run: long enough for the stop to land in it
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            steps.append((args.output_dir, state.global_step))
            if args.output_dir == steps[0][0]:
                time.sleep(0.2)

    trainer = tiny_trainer(tmp_path, callbacks=[SlowSteps()])
    trainer.args = TrainingArguments(**{**trainer.args.to_dict(), "num_train_epochs": 20})
    stopped: list[str] = []

    def stop_the_first_run() -> None:
        wandb_double.wait_for(lambda: bool(wandb_double.runs()), timeout=120)
        run_id = wandb_double.runs()[0]["id"]
        wandb_double.wait_for(lambda: len(steps) >= 3, timeout=120)
        wandb_double.stop_run(run_id)  # what the stop button or hyperband sends
        stopped.append(run_id)

    stopper = threading.Thread(target=stop_the_first_run, daemon=True)
    stopper.start()
    space = {"method": "grid", "parameters": {"learning_rate": {"values": [1e-3, 2e-3]}}}
    best = trainer.hyperparameter_search(
        backend="wandb", hp_space=lambda trial: space, n_trials=2, wbsweep_backend="wandb",
        project="hf",
    )  # fmt: skip
    stopper.join(timeout=10)
    (first,) = stopped
    full = 20 * 4  # 64 samples / 16 per step, 20 epochs
    first_steps = [step for out, step in steps if out.endswith(f"run-{first}")]
    assert 3 <= max(first_steps) < full  # it ended early, at a step, on W&B's word
    assert wandb_double.run(first)["state"] != "finished"
    assert best.run_id != first  # the second run finished and is the best
