"""The Transformers docs' W&B hyperparameter search, run by wbsweep.

This is the snippet from the Transformers "Hyperparameter search" guide as
written there (``model_init``, ``wandb_hp_space``, ``compute_objective``,
``Trainer(model=None, model_init=...)``, ``hyperparameter_search(backend="wandb")``,
then the best hyperparameters applied and the model retrained). Two things
differ: ``import wbsweep`` (the one line users add) and the model and data,
which are a tiny BERT built from a config and synthetic token sequences, so it
runs offline on a CPU in seconds per trial.

    python examples/hf_search_docs.py                       # W&B if logged in, else local
    WBSWEEP_BACKEND=local python examples/hf_search_docs.py
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 \\
        examples/hf_search_docs.py                          # 2 ranks train every trial
    WBSWEEP_SWEEP_ID=<id> python examples/hf_search_docs.py # join a sweep from another process

``HF_SEARCH_N_TRIALS`` (default 20, as in the docs) sets ``n_trials``.
"""

from __future__ import annotations

import os

import torch
from datasets import Dataset
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainingArguments,
    default_data_collator,
)

import wbsweep  # noqa: F401  - routes backend="wandb" through wbsweep

VOCAB_SIZE, SEQ_LEN = 100, 16


def synthetic(n: int, seed: int) -> Dataset:
    """Random token sequences; label 1 when the first token is in the vocabulary's lower half."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB_SIZE, (n, SEQ_LEN), generator=generator)
    labels = (ids[:, 0] < (5 + VOCAB_SIZE) // 2).long()
    return Dataset.from_dict(
        {
            "input_ids": ids.tolist(),
            "attention_mask": torch.ones_like(ids).tolist(),
            "labels": labels.tolist(),
        }
    )


train_dataset, eval_dataset = synthetic(512, seed=1), synthetic(256, seed=2)
tokenizer = None  # the docs pass a tokenizer; synthetic ids need none
data_collator = default_data_collator


# ---- from here on: the docs' snippet ------------------------------------------------


def model_init(trial):
    # The docs load AutoModelForSequenceClassification.from_pretrained(...); this
    # builds a 2-layer BERT instead so that nothing is downloaded.
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=SEQ_LEN,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def wandb_hp_space(trial):
    return {
        "method": "random",
        "metric": {"name": "objective", "goal": "minimize"},
        "parameters": {
            "learning_rate": {"distribution": "uniform", "min": 1e-6, "max": 1e-4},
            "per_device_train_batch_size": {"values": [16, 32, 64, 128]},
        },
    }


def compute_objective(metrics):
    return metrics["eval_loss"]


training_args = TrainingArguments(
    output_dir="hf_search_docs",
    eval_strategy="epoch",
    save_strategy="no",
    num_train_epochs=1,
    per_device_eval_batch_size=64,
    report_to="none",
    disable_tqdm=True,
    # BERT's classification loss is already a mean: keep eval_loss comparable
    # whether 1 or N processes train.
    average_tokens_across_devices=False,
)

trainer = Trainer(
    model=None,
    args=training_args,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    processing_class=tokenizer,
    model_init=model_init,
    data_collator=data_collator,
)

best_trial = trainer.hyperparameter_search(
    direction="minimize",
    backend="wandb",
    hp_space=wandb_hp_space,
    n_trials=int(os.environ.get("HF_SEARCH_N_TRIALS", "20")),
    compute_objective=compute_objective,
)

for k, v in best_trial.hyperparameters.items():
    setattr(trainer.args, k, v)

trainer.train()

if trainer.is_world_process_zero():
    print(f"best trial: {best_trial}")

# Under `accelerate launch`, leave the process group together before exiting, so
# no rank's interpreter shutdown races a peer that is still tearing down.
if torch.distributed.is_initialized():
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
