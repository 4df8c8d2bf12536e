"""Shared fixtures: every test gets its own store, W&B dir and working directory."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In parallel runs (pytest-xdist), end-to-end tests go first, each file in its order.

    They take seconds to a minute each, the others milliseconds: started first,
    the long ones run side by side and the short ones fill the workers at the
    end, instead of one long test running alone after everything else. Every
    worker collects the same order, as xdist requires. A run in one process
    keeps the file order (the quick tiers first).
    """
    if not hasattr(config, "workerinput"):  # not an xdist worker
        return
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the store, W&B (login included) and Hugging Face caches at ``tmp_path``; no network.

    A test that opened a W&B run in this process leaves the SDK's settings (its
    ``WANDB_DIR`` among them) cached for the process: they are dropped afterwards.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WBSWEEP_STORE", str(tmp_path / ".wbsweep" / "store.db"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Where `accelerate config` keeps its default: a developer's own never reaches a test.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "huggingface"))
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.delenv("WBSWEEP_BACKEND", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    # The SDK exports these when it opens a run or a sweep: none leaks into the next test.
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    # A developer's own `wandb login` (netrc key, saved host) never reaches a test.
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / ".config" / "wandb"))
    for name in ("WANDB_BASE_URL", "WANDB_APP_URL", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
    yield tmp_path
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()


@pytest.fixture
def one_torch_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Torch on one CPU thread, here and in every child (``helpers.torch_on_one_thread``).

    For test modules whose tiny models train on the CPU and whose checks are not
    about how many threads a rank runs: ``pytest.mark.usefixtures("one_torch_thread")``.
    """
    from helpers import torch_on_one_thread

    restore = torch_on_one_thread(monkeypatch)
    yield
    restore()


# The W&B server double's fixture, for tests of the W&B backend.
from wandb_double import wandb_double  # noqa: E402, F401
