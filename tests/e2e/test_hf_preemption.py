"""Preemption in the plugin: a scheduler's SIGTERM to a script running ``hyperparameter_search``.

The trial saves a checkpoint and the script exits 143; the run is ``preempted``. Running the
script again, joining the same sweep, resumes that run from the checkpoint's step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import wait_for

from wbsweep.backends.local import LocalBackend
from wbsweep.errors import EXIT_TERMINATED

pytestmark = pytest.mark.slow

SCRIPT = """
import json, os, sys, time
import torch
from datasets import Dataset
from transformers import (BertConfig, BertForSequenceClassification, Trainer, TrainerCallback,
                          TrainingArguments)
import wbsweep  # noqa: F401

def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (n, 8), generator=g)
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * 8] * n,
                              "labels": (ids[:, 0] < 25).long().tolist()})

def model_init(trial):
    return BertForSequenceClassification(BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=8, num_labels=2))

class Steps(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        with open(os.environ["STEPS"], "a") as out:
            out.write(json.dumps([os.getpid(), args.output_dir, state.global_step]) + "\\n")
        time.sleep(float(os.environ.get("SLEEP", "0")))

args = TrainingArguments(output_dir="out", num_train_epochs=3, per_device_train_batch_size=16,
                         save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True)
trainer = Trainer(model_init=model_init, args=args, train_dataset=data(64, 1),
                  eval_dataset=data(32, 2), callbacks=[Steps()])
space = {"method": "grid", "parameters": {"learning_rate": {"values": [1e-3]}}}
best = trainer.hyperparameter_search(backend="wandb", hp_space=lambda t: space, n_trials=1,
                                     wbsweep_backend="local")
print("BEST", best.run_id)
"""


def steps(path: Path) -> list[list]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_sigterm_to_the_search_checkpoints_and_the_next_join_resumes(tmp_path: Path) -> None:
    script, log = tmp_path / "search.py", tmp_path / "steps.jsonl"
    script.write_text(SCRIPT)
    env = {**os.environ, "STEPS": str(log), "SLEEP": "0.3"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: len(steps(log)) >= 3, 120, "a few training steps")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_TERMINATED
    store = LocalBackend(os.environ["WBSWEEP_STORE"])
    (sweep,) = store.sweeps()
    (run,) = store.runs(sweep.id)
    assert run.state == "preempted"
    (checkpoint,) = (tmp_path / "out" / f"run-{run.id}").glob("checkpoint-*")
    saved = int(checkpoint.name.split("-")[1])

    again = subprocess.run(
        [sys.executable, str(script)],
        env={**env, "SLEEP": "0", "WBSWEEP_SWEEP_ID": sweep.id},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"BEST {run.id}" in again.stdout
    (done,) = store.runs(sweep.id)
    assert (done.id, done.state) == (run.id, "finished")
    resumed = [step for pid, _, step in steps(log) if pid != proc.pid]
    assert min(resumed) == saved + 1  # global_step goes on from the checkpoint
