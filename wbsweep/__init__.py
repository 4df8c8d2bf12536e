"""wbsweep: Weights & Biases sweeps for Hugging Face ``Trainer`` jobs."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
