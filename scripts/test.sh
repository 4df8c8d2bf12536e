#!/usr/bin/env bash
# Installs everything (scripts/setup.sh), then runs the whole test suite,
# end-to-end sweeps with real 2-rank accelerate launches included.
# Tests run in parallel, one pytest worker per CPU core up to 4 (pytest-xdist);
# WBSWEEP_TEST_WORKERS sets the number (0: all in this one process).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/setup.sh"
cd "$repo"
workers="${WBSWEEP_TEST_WORKERS:-auto}"
exec python -m pytest -ra -n "$workers" --maxprocesses 4 "$@"
