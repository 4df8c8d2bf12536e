"""wbsweep's entry for Transformers' ``ALL_HYPERPARAMETER_SEARCH_BACKENDS`` table.

Importing this module loads Transformers' table; the class itself is built by
:func:`wbsweep.hf._entry.backend_class`, so the install (which may run while
this very module is being imported) never needs this module.
"""

from __future__ import annotations

from transformers.hyperparameter_search import HyperParamSearchBackendBase

from wbsweep.hf._entry import backend_class

__all__ = ["WbsweepBackend"]

WbsweepBackend = backend_class(HyperParamSearchBackendBase)
