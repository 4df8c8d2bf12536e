"""Preemption in the plugin: a scheduler's SIGTERM to a script running ``hyperparameter_search``.

The trial saves a checkpoint and the script exits 143; the run is ``preempted``. Running the
script again, joining the same sweep, resumes that run from the checkpoint's step. The
SIGTERM goes to a script in a process of its own; the rerun runs the same script in this
process.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import wait_for

from wbsweep.backends.local import LocalBackend
from wbsweep.errors import EXIT_TERMINATED

# Tiny models train on one torch thread here and in every rank (tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


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


def test_a_sigterm_to_the_search_checkpoints_and_the_next_join_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
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

    # The rerun, in this process (the script as it is, run as __main__; a process of
    # its own adds nothing the checks see): it joins the sweep and resumes the run.
    for key, value in {"STEPS": str(log), "SLEEP": "0", "WBSWEEP_SWEEP_ID": sweep.id}.items():
        monkeypatch.setenv(key, value)
    runpy.run_path(str(script), run_name="__main__")
    assert f"BEST {run.id}" in capsys.readouterr().out
    (done,) = store.runs(sweep.id)
    assert (done.id, done.state) == (run.id, "finished")
    resumed = [step for pid, _, step in steps(log) if pid != proc.pid]
    assert min(resumed) == saved + 1  # global_step goes on from the checkpoint
