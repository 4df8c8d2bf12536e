"""The plugin is installed whatever a user imports first, with no warning.

Each order needs a fresh interpreter (the install happens at import time), so
each runs in its own process; they run side by side to keep this quick.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ORDERS = {
    "wbsweep, then transformers": "import wbsweep\nfrom transformers import Trainer",
    "transformers, then wbsweep": "from transformers import Trainer\nimport wbsweep",
    "wbsweep.hf.backend first": "import wbsweep.hf.backend\nfrom transformers import Trainer",
    "table, then wbsweep.hf.backend": (
        "import transformers.hyperparameter_search\nimport wbsweep.hf.backend"
    ),
    "wbsweep.hf first, explicit install": "import wbsweep.hf\nwbsweep.hf.install()",
}

_CHECK = """
import warnings
warnings.simplefilter("error")  # a circular-import warning fails the order
{imports}
from transformers.hyperparameter_search import ALL_HYPERPARAMETER_SEARCH_BACKENDS as table
from transformers.trainer_utils import HPSearchBackend
from wbsweep.hf.backend import WbsweepBackend
entry = table[HPSearchBackend.WANDB]
print("installed", entry is WbsweepBackend, entry.__module__, entry.__qualname__)
"""


def test_every_import_order_installs_the_plugin() -> None:
    env = {**os.environ, "PYTHONWARNINGS": "error::UserWarning"}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", _CHECK.format(imports=imports)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name, imports in ORDERS.items()
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"{name}: {err[-2000:]}"
        assert "installed True wbsweep.hf.backend WbsweepBackend" in out, f"{name}: {out}{err}"
