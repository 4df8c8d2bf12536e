"""A tiny, fast sweep: a 2-layer BERT from a config on synthetic token data.

No download, no package beyond wbsweep's own dependencies: a trial trains for
a couple of seconds on a CPU. The label is a learnable rule (is the first
token in the lower half of the vocabulary?) so the loss moves and the sweep has
something to optimise.

``hidden_dropout_prob`` is a model param, not a ``TrainingArguments`` field:
it reaches the model through ``model_init(trial)``.

    wbsweep create sweeps/tiny.py
"""

from __future__ import annotations

from typing import Any

VOCAB_SIZE = 100
SEQ_LEN = 16
FIRST_TOKEN = 5  # ids below this are left to special tokens

SWEEP = {
    "method": "random",
    "direction": "minimize",
    "metric": "eval_loss",
    "n_trials": 4,
}


def hp_space(trial: Any) -> dict[str, Any]:
    """Optuna-style space, as for ``Trainer.hyperparameter_search``."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        "per_device_train_batch_size": trial.suggest_categorical(
            "per_device_train_batch_size", [8, 16, 32]
        ),
        "hidden_dropout_prob": trial.suggest_float("hidden_dropout_prob", 0.0, 0.3),
    }


def model_init(trial: dict[str, Any] | None) -> Any:
    """A fresh 2-layer, hidden-32 BERT classifier; dropout from the trial's params."""
    from transformers import BertConfig, BertForSequenceClassification

    params = trial or {}
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=SEQ_LEN,
        hidden_dropout_prob=float(params.get("hidden_dropout_prob", 0.1)),
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def training_args() -> Any:
    """Base arguments: a short CPU run that saves nothing and reports nowhere."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir="outputs/tiny",
        num_train_epochs=2,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        learning_rate=1e-3,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=10,
        report_to="none",
        disable_tqdm=True,
        seed=0,
        # Transformers scales a loss that accepts loss kwargs by the number of
        # processes; BERT's classification loss is already a mean, so keep the
        # eval_loss objective comparable across 1 or N processes.
        average_tokens_across_devices=False,
    )


def synthetic(n: int, seed: int) -> Any:
    """``n`` random sequences; label 1 when the first token is in the vocabulary's lower half."""
    import torch
    from datasets import Dataset

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(FIRST_TOKEN, VOCAB_SIZE, (n, SEQ_LEN), generator=generator)
    # The classifier reads the first position (BERT's pooler), so the rule is
    # learnable in a few dozen steps.
    labels = (ids[:, 0] < (FIRST_TOKEN + VOCAB_SIZE) // 2).long()
    return Dataset.from_dict(
        {
            "input_ids": ids.tolist(),
            "attention_mask": torch.ones_like(ids).tolist(),
            "labels": labels.tolist(),
        }
    )


def datasets() -> tuple[Any, Any]:
    """512 training and 256 evaluation sequences, the same on every rank."""
    return synthetic(512, seed=1), synthetic(256, seed=2)
