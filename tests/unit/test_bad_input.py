"""A catalogue of malformed inputs: each a one-line error naming the problem, its exit code, no
traceback, and the store exactly as it was (a lookup never creates one).

Every case runs the real CLI in this process (click's ``CliRunner``). Exit code 2 is click's own
(an unknown option, a value not among the choices); wbsweep's are in ``wbsweep.errors``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import SWEEPS, invoke

from wbsweep.backends.local import LocalBackend
from wbsweep.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_LOGIN,
    EXIT_NO_BEST,
    EXIT_NOT_FOUND,
    EXIT_STORE,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)

TINY = str(SWEEPS / "tiny.py")
REQUIRED = "def model_init(trial): pass\ndef training_args(): pass\ndef datasets(): pass\n"


@dataclass
class Case:
    """``wbsweep ARGS`` after writing ``files``: it fails with ``code``, naming ``needle``."""

    args: list[str]
    code: int
    needle: str
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None


def space(body: str) -> dict[str, str]:
    return {"s.py": REQUIRED + f"def hp_space(trial):\n    {body}\n"}


def newer_store(tmp: Path) -> None:
    with sqlite3.connect(tmp / "newer.db") as db:
        db.execute("CREATE TABLE migrations (id INTEGER PRIMARY KEY, at REAL)")
        db.executemany("INSERT INTO migrations VALUES (?, 0)", [(n,) for n in range(1, 100)])


CASES: dict[str, Case] = {
    # -- the sweep file
    "missing sweep file": Case(["create", "nope.py"], EXIT_BAD_INPUT, "no such sweep file"),
    "W&B YAML instead of a sweep file": Case(
        ["create", "sweep.yaml"], EXIT_BAD_INPUT, "is a W&B sweep config, not a sweep file",
        files={"sweep.yaml": "method: random\nparameters:\n  lr:\n    values: [1, 2]\n"},
    ),
    "W&B JSON instead of a sweep file": Case(
        ["create", "sweep.json"], EXIT_BAD_INPUT, "`wandb sweep`",
        files={"sweep.json": '{"method": "random"}'},
    ),
    "syntax error": Case(
        ["create", "s.py"], EXIT_BAD_INPUT, "SyntaxError", files={"s.py": "def model_init(:\n"}
    ),
    "no model_init": Case(
        ["create", "s.py"], EXIT_BAD_INPUT, "model_init",
        files={"s.py": "def training_args(): pass\ndef datasets(): pass\n"},
    ),
    "no training_args": Case(
        ["create", "s.py"], EXIT_BAD_INPUT, "training_args",
        files={"s.py": "def model_init(t): pass\ndef datasets(): pass\n"},
    ),
    "no datasets": Case(
        ["create", "s.py"], EXIT_BAD_INPUT, "datasets",
        files={"s.py": "def model_init(t): pass\ndef training_args(): pass\n"},
    ),
    "model_init is not a function": Case(
        ["create", "s.py"], EXIT_BAD_INPUT, "model_init",
        files={"s.py": "model_init = 3\ndef training_args(): pass\ndef datasets(): pass\n"},
    ),
    "unknown SWEEP key": Case(
        ["create", "s.py"], EXIT_BAD_INPUT, "n_trails",
        files={"s.py": REQUIRED + "SWEEP = {'n_trails': 3}\n"},
    ),
    "SWEEP is not a dict": Case(
        ["create", "s.py"], EXIT_BAD_INPUT, "SWEEP", files={"s.py": REQUIRED + "SWEEP = [1]\n"}
    ),
    "imports a missing module": Case(
        ["create", "s.py"], EXIT_BAD_INPUT, "no_such_module_xyz",
        files={"s.py": "import no_such_module_xyz\n" + REQUIRED},
    ),
    "raises while imported": Case(
        ["create", "s.py"], EXIT_BAD_INPUT, "boom at import",
        files={"s.py": REQUIRED + "raise RuntimeError('boom at import')\n"},
    ),
    "a directory as the sweep file": Case(["create", "."], EXIT_USAGE, "is a directory"),
    # -- hp_space
    "low above high": Case(
        ["create", "s.py"], EXIT_BAD_INPUT, "'lr': low 1.0 is greater than high 0.1",
        files=space("return {'lr': trial.suggest_float('lr', 1.0, 0.1)}"),
    ),
    "log with low 0": Case(
        ["create", "s.py"], EXIT_BAD_INPUT, "'lr': log=True needs low > 0",
        files=space("return {'lr': trial.suggest_float('lr', 0.0, 0.1, log=True)}"),
    ),
    "empty choices": Case(
        ["create", "s.py"], EXIT_BAD_INPUT, "'opt': choices are empty",
        files=space("return {'opt': trial.suggest_categorical('opt', [])}"),
    ),
    "unsupported trial method": Case(
        ["create", "s.py"], EXIT_BAD_INPUT, "suggest_banana",
        files=space("return {'x': trial.suggest_banana('x')}"),
    ),
    "hp_space raises": Case(
        ["create", "s.py"], EXIT_BAD_INPUT, "space is broken",
        files=space("raise ValueError('space is broken')"),
    ),
    "bad W&B distribution": Case(
        ["create", "s.py"], EXIT_BAD_INPUT, "lr",
        files={"s.py": REQUIRED + "hp_space = {'lr': {'distribution': 'gaussianish'}}\n"},
    ),
    "hp_space of the wrong type": Case(
        ["create", "s.py"], EXIT_BAD_INPUT, "hp_space", files={"s.py": REQUIRED + "hp_space = 5\n"}
    ),
    # -- options
    "zero trials": Case(["create", TINY, "--n-trials", "0"], EXIT_BAD_INPUT, "n_trials"),
    "trials not a number": Case(["create", TINY, "--n-trials", "abc"], EXIT_USAGE, "'abc'"),
    "unknown method": Case(["create", TINY, "--method", "annealing"], EXIT_USAGE, "annealing"),
    "unknown direction": Case(["create", TINY, "--direction", "sideways"], EXIT_USAGE, "sideways"),
    "hyperband min_iter 0": Case(
        ["create", TINY, "--hyperband-min-iter", "0"], EXIT_BAD_INPUT, "early_terminate"
    ),
    "unknown backend option": Case(["create", TINY, "--backend", "nope"], EXIT_USAGE, "nope"),
    "zero workers": Case(["agent", "{sweep}", "--workers", "0"], EXIT_BAD_INPUT, "--workers"),
    "GPUs asked of a CPU node": Case(
        ["agent", "{sweep}", "--gpus-per-trial", "1"], EXIT_BAD_INPUT, "sees no GPU",
        env={"CUDA_VISIBLE_DEVICES": ""},
    ),
    "negative retries": Case(["agent", "{sweep}", "--max-retries", "-1"], EXIT_USAGE, "-1"),
    "zero failures allowed": Case(
        ["agent", "{sweep}", "--max-consecutive-failures", "0"], EXIT_USAGE, "0"
    ),
    # -- sweep ids
    "unknown sweep in the store": Case(["status", "nosuchid"], EXIT_NOT_FOUND, "'nosuchid'"),
    "unknown sweep, no store": Case(
        ["status", "nosuchid", "--store", "elsewhere/store.db"], EXIT_NOT_FOUND,
        "no local store at",
    ),
    "unknown bare id, WANDB_PROJECT set, no W&B login": Case(
        ["status", "nosuchid"], EXIT_NOT_FOUND, "'nosuchid'", env={"WANDB_PROJECT": "proj"}
    ),
    "malformed W&B sweep path": Case(["status", "a/b"], EXIT_FAILED, "entity/project/sweep_id"),
    "no best run yet": Case(["best", "{sweep}"], EXIT_NO_BEST, "no finished run"),
    # -- the store path
    "store under a regular file": Case(
        ["create", TINY, "--store", "afile/store.db"], EXIT_STORE, "afile", files={"afile": "x"}
    ),
    "not a wbsweep store": Case(
        ["status", "x", "--store", "junk.db"], EXIT_STORE, "is not a wbsweep store",
        files={"junk.db": "hello, I am not SQLite" * 100},
    ),
    "store from a newer wbsweep": Case(
        ["status", "x", "--store", "newer.db"], EXIT_STORE, "newer wbsweep", setup=newer_store
    ),
    # -- settings
    "unknown WBSWEEP_BACKEND": Case(
        ["create", TINY], EXIT_BAD_INPUT, "'nope'", env={"WBSWEEP_BACKEND": "nope"}
    ),
    "bad heartbeat timeout": Case(
        ["status", "{sweep}"], EXIT_BAD_INPUT, "WBSWEEP_HEARTBEAT_TIMEOUT",
        env={"WBSWEEP_HEARTBEAT_TIMEOUT": "soon"},
    ),
    "not logged in to W&B": Case(
        ["create", TINY, "--backend", "wandb"], EXIT_LOGIN, "not logged in",
        env={"NETRC": "/nonexistent/netrc"},
    ),
    "W&B server unreachable": Case(
        ["create", TINY, "--backend", "wandb"], EXIT_UNREACHABLE, "cannot reach W&B",
        env={"WANDB_API_KEY": "k" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"},
    ),
}  # fmt: skip


def store_state(path: Path) -> object:
    """What a user would call the store's contents: its sweeps and their runs (or no store)."""
    if not path.exists():
        return None
    store = LocalBackend(path)
    return [(s.id, s.state, [(r.id, r.state) for r in store.runs(s.id)]) for s in store.sweeps()]


def test_the_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name]
    for file, text in case.files.items():
        (tmp_path / file).write_text(text)
    if case.setup is not None:
        case.setup(tmp_path)
    store = tmp_path / ".wbsweep" / "store.db"
    sweep_id = ""
    if any("{sweep}" in arg for arg in case.args):
        sweep_id = LocalBackend(store).create(
            {"method": "random", "metric": {"name": "loss", "goal": "minimize"}, "parameters": {}}
        )
    before = store_state(store)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)

    result = invoke(*[arg.format(sweep=sweep_id) for arg in case.args])

    assert result.exit_code == case.code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("Error: ") and case.needle in lines[-1], lines
    if case.code != EXIT_USAGE:  # click's own usage errors print the usage first
        assert len(lines) == 1, lines
    assert "Traceback" not in result.stderr + result.stdout
    monkeypatch.delenv("WBSWEEP_HEARTBEAT_TIMEOUT", raising=False)
    assert store_state(store) == before  # nothing lost, nothing half-written, no new store
