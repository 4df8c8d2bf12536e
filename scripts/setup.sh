#!/usr/bin/env bash
# Installs wbsweep and everything it needs into a virtual environment.
# Usage: source scripts/setup.sh   (or bash it; scripts/demo.sh and scripts/test.sh call it)
# Uses $VIRTUAL_ENV when one is active, else creates .venv in the repository.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${VIRTUAL_ENV:-}" ]; then
  venv="$VIRTUAL_ENV"
else
  venv="$repo/.venv"
  [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"
quiet=(--quiet --disable-pip-version-check)
# With no torch importable, install one before wbsweep's own `torch>=2.2` could
# pull whatever the index has. Which build comes is the index's choice: on Linux,
# PyPI's torch is a CUDA build; a find-links folder with a +cpu wheel gives that.
# WBSWEEP_TORCH_SPEC: the requirement. WBSWEEP_TORCH_INDEX: pip's --index-url for
# it, e.g. https://download.pytorch.org/whl/cpu or .../whl/cu128.
if ! "$py" -c "import torch" >/dev/null 2>&1; then
  torch_spec="${WBSWEEP_TORCH_SPEC:-torch==2.13.0}"
  torch_index=()
  if [ -n "${WBSWEEP_TORCH_INDEX:-}" ]; then
    torch_index=(--index-url "$WBSWEEP_TORCH_INDEX")
  fi
  echo "setup: installing $torch_spec${WBSWEEP_TORCH_INDEX:+ from $WBSWEEP_TORCH_INDEX}" >&2
  "$py" -m pip install "${quiet[@]}" ${torch_index[@]+"${torch_index[@]}"} "$torch_spec"
fi
# The report's browser test (tests/e2e/test_report_page.py) drives Debian's Chromium.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing chromium and chromium-driver (for the report's browser test)" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver >&2
  else
    echo "setup: no chromium: the report's browser test will not run (install chromium" \
      "and chromium-driver)" >&2
  fi
fi
echo "setup: installing wbsweep with its examples and test tools" >&2
"$py" -m pip install "${quiet[@]}" -e "$repo[examples,test]"
"$py" -m pip check >&2
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
