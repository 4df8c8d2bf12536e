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
