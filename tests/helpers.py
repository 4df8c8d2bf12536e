"""Running the real ``wbsweep`` console script, and looking for stray processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SWEEPS = REPO / "sweeps"
TEST_SWEEPS = REPO / "tests" / "sweeps"
WBSWEEP = str(Path(sys.executable).parent / "wbsweep")


def wbsweep(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``wbsweep ARGS`` in the current directory with the test's environment."""
    return subprocess.run(
        [WBSWEEP, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        check=False,
    )


def create(sweep_file: Path, *args: str) -> str:
    """``wbsweep create --json`` and return the new sweep's id."""
    result = wbsweep("create", str(sweep_file), "--json", *args)
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["sweep_id"])


def status(sweep_id: str) -> dict[str, Any]:
    result = wbsweep("status", sweep_id, "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def processes_mentioning(needle: str) -> list[tuple[int, str]]:
    """Live processes whose command line or environment contains ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat.split(") ", 1)[-1].startswith("Z"):
            continue  # a zombie holds no memory and is its parent's to reap
        if needle in cmdline or needle in environ:
            found.append((int(entry.name), cmdline.strip()))
    return found
