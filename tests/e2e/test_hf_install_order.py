"""The plugin is installed whatever a user imports first, with no warning; an env var turns it off.

The install happens at import time, so each order runs in a process that has
imported neither ``transformers`` nor ``wbsweep`` yet. To keep this cheap,
one interpreter imports what Transformers itself needs (torch, datasets...:
most of the import's cost, and none of it the plugin's business), checks that
neither package is loaded, then forks one child per order: each child starts
with both unimported, an untouched ``sys.meta_path`` and its own environment.
(Every trial of the other end-to-end tests is a wholly fresh interpreter that
imports ``wbsweep`` before ``transformers``.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ORDERS = {
    # The hook path: `import wbsweep` must not import Transformers (it is slow, and
    # the CLI and every trial worker import wbsweep), and the hook is gone once it fired.
    "wbsweep, then transformers": (
        "import wbsweep\n"
        "assert 'transformers' not in sys.modules, 'import wbsweep imported transformers'\n"
        "from transformers import Trainer"
    ),
    "transformers, then wbsweep": "from transformers import Trainer\nimport wbsweep",
    "wbsweep.hf.backend first": "import wbsweep.hf.backend\nfrom transformers import Trainer",
    "table, then wbsweep.hf.backend": (
        "import transformers.hyperparameter_search\nimport wbsweep.hf.backend"
    ),
    "wbsweep.hf first, explicit install": "import wbsweep.hf\nwbsweep.hf.install()",
}

_CHECK = """
import sys, warnings
warnings.simplefilter("error")  # a circular-import warning fails the order
{imports}
from transformers.hyperparameter_search import ALL_HYPERPARAMETER_SEARCH_BACKENDS as table
from transformers.trainer_utils import HPSearchBackend
from wbsweep.hf.backend import WbsweepBackend
entry = table[HPSearchBackend.WANDB]
print("installed", entry is WbsweepBackend, entry.__module__, entry.__qualname__)
print("hooks", sum(type(f).__module__.startswith("wbsweep") for f in sys.meta_path))
"""

# WBSWEEP_HF_PLUGIN=0: `import wbsweep` leaves Transformers' own backend; install() still works.
_OFF = """
import sys
import wbsweep
from transformers import Trainer
from transformers.hyperparameter_search import ALL_HYPERPARAMETER_SEARCH_BACKENDS as table
from transformers.trainer_utils import HPSearchBackend
print("off", table[HPSearchBackend.WANDB].__module__)
print("hooks", sum(type(f).__module__.startswith("wbsweep") for f in sys.meta_path))
import wbsweep.hf
wbsweep.hf.install()
print("explicit", table[HPSearchBackend.WANDB].__module__)
"""

# Imports what Transformers needs, then runs each order in a forked child whose
# stdout and stderr go to its own files; prints {name: returncode} as JSON.
_FORKER = """
import importlib, json, os, sys, traceback
for name in ("torch", "torch.distributed.tensor", "torch._dynamo", "torch.export", "sympy",
             "scipy.optimize", "pandas", "datasets", "accelerate", "safetensors.torch",
             "huggingface_hub"):
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # the child imports it with Transformers, if Transformers needs it
loaded = [m for m in sys.modules if m.split(".")[0] in ("transformers", "wbsweep")]
assert not loaded, f"preloading imported {loaded}"
jobs, out = json.loads(sys.argv[1]), sys.argv[2]
codes = {}
for index, (name, code, env) in enumerate(jobs):
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            for fd, suffix in ((1, "out"), (2, "err")):
                os.dup2(os.open(f"{out}/{index}.{suffix}", os.O_WRONLY | os.O_CREAT), fd)
            os.environ.update(env)
            exec(compile(code, f"<{name}>", "exec"), {"__name__": "__main__"})
        except BaseException:
            traceback.print_exc()
            status = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(status)
    codes[name] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(codes))
"""


def test_every_import_order_installs_the_plugin_and_the_env_turns_it_off(tmp_path: Path) -> None:
    jobs = [(name, _CHECK.format(imports=imports), {}) for name, imports in ORDERS.items()]
    jobs.append(("WBSWEEP_HF_PLUGIN=0", _OFF, {"WBSWEEP_HF_PLUGIN": "0"}))
    env = {**os.environ, "PYTHONWARNINGS": "error::UserWarning"}
    env.pop("WBSWEEP_HF_PLUGIN", None)
    forker = subprocess.run(
        [sys.executable, "-c", _FORKER, json.dumps(jobs), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert forker.returncode == 0, forker.stderr[-3000:]
    codes = json.loads(forker.stdout.splitlines()[-1])
    assert list(codes) == [name for name, _, _ in jobs]
    results = {}
    for index, (name, _, _) in enumerate(jobs):
        out, err = ((tmp_path / f"{index}.{s}").read_text() for s in ("out", "err"))
        assert codes[name] == 0, f"{name}: {err[-2000:]}"
        results[name] = out
    for name in ORDERS:
        out = results[name]
        assert "installed True wbsweep.hf.backend WbsweepBackend" in out, f"{name}: {out}"
        assert "hooks 0" in out, f"{name}: {out}"  # the hook removed itself once it fired
    off = results["WBSWEEP_HF_PLUGIN=0"]
    assert "off transformers.hyperparameter_search" in off, off
    assert "hooks 0" in off, off  # no hook was ever added
    assert "explicit wbsweep.hf.backend" in off, off
