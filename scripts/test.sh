#!/usr/bin/env bash
# Installs everything (scripts/setup.sh), then runs the whole test suite,
# end-to-end sweeps with real 2-rank accelerate launches included.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/setup.sh"
cd "$repo"
exec python -m pytest -ra "$@"
