"""The Transformers plugin: ``trainer.hyperparameter_search(backend="wandb")`` runs through wbsweep.

What users write is unchanged from the Transformers docs; they add ``import
wbsweep``::

    import wbsweep  # noqa: F401
    best = trainer.hyperparameter_search(backend="wandb", hp_space=..., n_trials=20, ...)

**How it is installed, and why this way.** Transformers looks the backend up
in ``transformers.hyperparameter_search.ALL_HYPERPARAMETER_SEARCH_BACKENDS``
(a dict that ``trainer.py`` imports by reference) each time
``hyperparameter_search`` is called. :func:`install` replaces the
``HPSearchBackend.WANDB`` entry of that dict, in place, with
:class:`wbsweep.hf.backend.WbsweepBackend`; it is idempotent and
:func:`uninstall` puts Transformers' class back.

``import wbsweep`` installs it too, but must not import Transformers (several
seconds, and the CLI and trial workers import ``wbsweep`` on every start):

* if ``transformers.hyperparameter_search`` is already in ``sys.modules``, the
  entry is replaced at once;
* otherwise a small finder is put first on ``sys.meta_path``. It does nothing
  for any other module; for that one it lets the regular finders locate it,
  wraps the loader, and replaces the entry right after the module has run,
  before ``trainer.py`` (which imports it) goes on. It then removes itself.

A meta-path hook was chosen over patching ``Trainer`` or wrapping
``hyperparameter_search`` because it changes only the table entry that
Transformers provides for exactly this purpose, whatever imports Transformers
first. ``WBSWEEP_HF_PLUGIN=0`` turns the automatic install off (the explicit
:func:`install` still works); a failure to install is a warning, never an
error of ``import wbsweep``.

**Keyword arguments** (besides ``hp_space``, ``compute_objective``,
``n_trials``, ``direction``): ``sweep_id`` (join an existing sweep; default
``$WBSWEEP_SWEEP_ID``), ``project``, ``entity``, ``name``, ``metric`` (default:
the W&B config's metric, else ``objective``), ``method`` (``random``, ``grid``,
``bayes``), ``wbsweep_backend`` (``local``, ``wandb``, ``auto``; default
``$WBSWEEP_BACKEND``, else ``auto``), ``wbsweep_store`` (default
``$WBSWEEP_STORE``), ``wbsweep_count`` (the most trials this process runs;
default ``$WBSWEEP_COUNT``, else until the sweep has nothing left). ``n_trials``
is the sweep's ``run_cap``, shared by every process that joins it. See
:mod:`wbsweep.hf.search` for the execution model across ranks.
"""

from __future__ import annotations

from wbsweep.hf._install import PLUGIN_ENV, auto_install, install, is_installed, uninstall

__all__ = ["PLUGIN_ENV", "auto_install", "install", "is_installed", "uninstall"]
