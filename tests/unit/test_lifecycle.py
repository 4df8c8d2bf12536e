"""One trial in this process, with real Trainer code: what ``hp_space`` returns is what applies.

A conditional space (an optimizer choice with an AdamW-only param) with a
derived batch size (``2 ** log2_bs``) runs a grid of real trials on a tiny model
through :func:`wbsweep.lifecycle.run_trial`, reporting to the local store; then
the status table and ``best`` read what the trials recorded.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from helpers import invoke, invoke_create

from wbsweep.backends.base import RunEnd
from wbsweep.backends.local import LocalBackend
from wbsweep.best import best_run
from wbsweep.lifecycle import run_trial
from wbsweep.sweepfile import load_sweep_file

SWEEP_FILE = """
from typing import Any

SWEEP = {"method": "grid", "metric": "objective", "direction": "minimize"}
SEEN: list[dict[str, Any]] = []


def hp_space(trial):
    optim = trial.suggest_categorical("optim", ["sgd", "adamw_torch"])
    params = {
        "optim": optim,
        "per_device_train_batch_size": 2 ** trial.suggest_categorical("log2_bs", [2, 3]),
        "hidden_dropout_prob": 0.1 * trial.suggest_int("dropout_tenths", 0, 0),
        "hidden_sise": 32,  # a typo: neither a TrainingArguments field nor read below
    }
    if optim == "adamw_torch":
        params["adam_beta1"] = trial.suggest_categorical("adam_beta1", [0.85])
    return params


def model_init(trial):
    from transformers import BertConfig, BertForSequenceClassification

    # Kept, not copied: a copy would count as reading every key.
    SEEN.append({"model_init": trial})
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=8, num_labels=2,
        hidden_dropout_prob=trial["hidden_dropout_prob"],
    )
    return BertForSequenceClassification(config)


def training_args():
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir="out", num_train_epochs=1, per_device_train_batch_size=16, save_strategy="no",
        report_to="none", disable_tqdm=True, use_cpu=True, average_tokens_across_devices=False,
    )


def datasets():
    from datasets import Dataset

    rows = [[5 + (i * 7 + j) % 40 for j in range(8)] for i in range(16)]
    data = Dataset.from_dict(
        {"input_ids": rows, "attention_mask": [[1] * 8] * 16, "labels": [i % 2 for i in range(16)]}
    )
    return data, data


def trainer_kwargs():
    from transformers import TrainerCallback

    class Seen(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            SEEN[-1].update(
                optim=str(args.optim.value), batch=args.per_device_train_batch_size,
                adam_beta1=args.adam_beta1,
            )

    return {"callbacks": [Seen()]}


def compute_objective(metrics):
    return 0.1 if SEEN[-1]["optim"] == "sgd" else 0.5
"""


def test_a_trial_applies_what_hp_space_returns(tmp_path: Path) -> None:
    path = tmp_path / "optimizers.py"
    path.write_text(SWEEP_FILE)
    sweep_id = invoke_create(path)
    sweep = load_sweep_file(path)
    seen = sweep.model_init.__globals__["SEEN"]
    store = LocalBackend()
    parameters = store.sweep(sweep_id).config["parameters"]
    assert set(parameters) == {"optim", "log2_bs", "dropout_tenths", "adam_beta1"}  # the union

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while (run := store.claim_next(sweep_id, "test")) is not None:
            run_trial(
                sweep, run.params, run_id=run.id, metric="objective", goal="minimize",
                reporter=store, wandb=None, is_main=True,
            )  # fmt: skip
            store.finish_run(run.id, RunEnd(0))
    runs = {r.id: r for r in store.runs(sweep_id)}
    assert len(runs) == 4 and len(seen) == 4

    for run, trial in zip(runs.values(), seen, strict=True):
        optim, log2_bs = run.params["optim"], run.params["log2_bs"]
        # The derived batch size is the trial's, and AdamW's beta1 applies on its branch only.
        assert trial["optim"] == optim and trial["batch"] == 2**log2_bs
        assert trial["adam_beta1"] == (0.85 if optim == "adamw_torch" else 0.9)
        # model_init gets the returned dict merged with this branch's sampled params.
        expected = {
            "optim": optim, "log2_bs": log2_bs, "dropout_tenths": 0,
            "per_device_train_batch_size": 2**log2_bs, "hidden_dropout_prob": 0.0,
            "hidden_sise": 32, **({"adam_beta1": 0.85} if optim == "adamw_torch" else {}),
        }  # fmt: skip
        assert dict(trial["model_init"]) == expected
        assert run.unused_params == ({"adam_beta1"} if optim == "sgd" else set())

    # The returned key that reaches nothing: one warning, naming it alone.
    typos = [str(w.message) for w in caught if "hidden_sise" in str(w.message)]
    assert len(typos) == 1 and "log2_bs" not in typos[0] and "adam_beta1" not in typos[0]

    table = invoke("status", sweep_id).stdout
    for run in runs.values():
        (line,) = [row for row in table.splitlines() if row.startswith(run.id)]
        if run.params["optim"] == "sgd":
            params, note = line.split("unused:")
            assert "adam_beta1" not in params and "adam_beta1=0.85" in note
        else:
            assert "adam_beta1=0.85" in line and "unused" not in line
    listed = json.loads(invoke("status", sweep_id, "--json").stdout)["runs"]
    assert [r["ran_as"].get("unused_params") for r in listed] == [
        ["adam_beta1"] if r.params["optim"] == "sgd" else None for r in runs.values()
    ]

    best = best_run(store, sweep_id)
    assert runs[best.run_id].params["optim"] == "sgd"
    assert best.hyperparameters == {
        k: v for k, v in runs[best.run_id].params.items() if k != "adam_beta1"
    }
    # `best --args` prints the overrides as the trial applied them: the derived batch size,
    # not the sampled exponent; the model params, derived ones included, apart on stderr.
    overrides = invoke("best", sweep_id, "--args")
    assert overrides.exit_code == 0, overrides.stderr
    batch = 2 ** runs[best.run_id].params["log2_bs"]
    assert overrides.stdout.split() == [
        "--optim", "sgd", "--per_device_train_batch_size", str(batch),
    ]  # fmt: skip
    assert "hidden_sise=32" in overrides.stderr and "log2_bs" in overrides.stderr
