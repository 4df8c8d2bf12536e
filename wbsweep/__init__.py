"""wbsweep: Weights & Biases sweeps for Hugging Face ``Trainer`` jobs."""

from __future__ import annotations

import warnings

# The `sweeps` engine (0.3) still spells a pydantic-v1 config key; pydantic warns
# on every import, and there is nothing a user could do about it.
warnings.filterwarnings(
    "ignore", message="Valid config keys have changed in V2", category=UserWarning
)

__version__ = "0.1.0"

__all__ = ["__version__"]

# Route `trainer.hyperparameter_search(backend="wandb")` through wbsweep without
# importing Transformers here (see wbsweep.hf); WBSWEEP_HF_PLUGIN=0 turns it off.
from wbsweep.hf._install import auto_install as _auto_install  # noqa: E402

_auto_install()
