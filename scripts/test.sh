#!/usr/bin/env bash
# Installs everything (scripts/setup.sh), then runs the whole test suite,
# end-to-end sweeps with real 2-rank accelerate launches included.
# Tests run in parallel (pytest-xdist), two pytest workers per CPU core up to 8:
# end-to-end tests spend much of their time waiting on launches and sleeps, so
# two per core keep the cores busy. Idle workers take tests from busy ones
# (--dist worksteal). WBSWEEP_TEST_WORKERS sets the number (0: all in this one process).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
# The 15 slowest tests are listed at the end, to keep the suite's length in view.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/setup.sh"
cd "$repo"
cores="$(python -c 'import os; print(len(os.sched_getaffinity(0)))')"
workers="${WBSWEEP_TEST_WORKERS:-$((cores * 2 > 8 ? 8 : cores * 2))}"
exec python -m pytest -ra --durations=15 -n "$workers" --dist worksteal "$@"
