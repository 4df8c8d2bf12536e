"""The Transformers hyperparameter-search docs' example, as a wbsweep sweep file.

Causal-LM fine-tuning of ``Qwen/Qwen3-0.6B`` with the docs' Optuna-style
space (learning rate, per-device batch size), for users with a Hub connection
and GPUs. Everything heavy is loaded inside the functions, so ``wbsweep create``
reads ``hp_space`` and ``SWEEP`` offline without downloading anything.

Environment overrides: ``WBSWEEP_QWEN_MODEL`` (Hub id or local directory),
``WBSWEEP_QWEN_DATASET`` / ``WBSWEEP_QWEN_DATASET_CONFIG`` (a Hub text dataset
with a ``text`` column and ``train``/``validation`` splits).

    wbsweep create sweeps/qwen3_docs.py --method bayes --n-trials 20
    wbsweep agent <SWEEP> --gpus-per-trial 2
"""

from __future__ import annotations

import os
from itertools import chain
from typing import Any

MODEL = os.environ.get("WBSWEEP_QWEN_MODEL", "Qwen/Qwen3-0.6B")
DATASET = os.environ.get("WBSWEEP_QWEN_DATASET", "Salesforce/wikitext")
DATASET_CONFIG = os.environ.get("WBSWEEP_QWEN_DATASET_CONFIG", "wikitext-2-raw-v1")
BLOCK_SIZE = 512

SWEEP = {
    "method": "bayes",
    "direction": "minimize",
    "metric": "eval_loss",
    "n_trials": 20,
    "project": "wbsweep-qwen3",
}


def hp_space(trial: Any) -> dict[str, Any]:
    """The docs' Optuna space."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-6, 1e-4, log=True),
        "per_device_train_batch_size": trial.suggest_categorical(
            "per_device_train_batch_size", [16, 32, 64, 128]
        ),
    }


def model_init(trial: dict[str, Any] | None) -> Any:
    """A fresh Qwen3-0.6B for each trial.

    No ``device_map="auto"`` (the docs' single-process form): under
    ``accelerate launch`` each rank holds a whole copy and Trainer places it.
    """
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(MODEL, dtype="auto")


def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL)


def training_args() -> Any:
    """The docs' base arguments, with bf16 and an eval at the end of the epoch."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir="outputs/qwen3_docs",
        num_train_epochs=1,
        eval_strategy="epoch",
        save_strategy="no",
        bf16=True,
        gradient_accumulation_steps=1,
        logging_steps=20,
        report_to="wandb",
        seed=0,
    )


def datasets() -> tuple[Any, Any]:
    """The text dataset, tokenized and packed into ``BLOCK_SIZE``-token blocks."""
    from datasets import load_dataset

    tokenizer = _tokenizer()
    raw = load_dataset(DATASET, DATASET_CONFIG)

    def tokenize(batch: dict[str, list[str]]) -> Any:
        return tokenizer(batch["text"])

    def pack(batch: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
        joined = {key: list(chain.from_iterable(batch[key])) for key in batch}
        usable = len(joined["input_ids"]) // BLOCK_SIZE * BLOCK_SIZE
        blocks = {
            key: [values[i : i + BLOCK_SIZE] for i in range(0, usable, BLOCK_SIZE)]
            for key, values in joined.items()
        }
        blocks["labels"] = [list(ids) for ids in blocks["input_ids"]]
        return blocks

    packed = raw.map(tokenize, batched=True, remove_columns=raw["train"].column_names).map(
        pack, batched=True
    )
    return packed["train"], packed["validation"]


def trainer_kwargs() -> dict[str, Any]:
    """The tokenizer and a causal-LM collator (no masking)."""
    from transformers import DataCollatorForLanguageModeling

    tokenizer = _tokenizer()
    return {
        "processing_class": tokenizer,
        "data_collator": DataCollatorForLanguageModeling(tokenizer, mlm=False),
    }
