#!/usr/bin/env bash
# Opt-in smoke test against YOUR W&B (cloud or W&B Server): a 2-trial sweep of
# sweeps/tiny.py through real `wandb agent` processes, then the best run.
# Needs a key (`wandb login`, or WANDB_API_KEY; WANDB_BASE_URL for W&B Server);
# without one it says so and exits 0. CI never runs it.
#   WANDB_PROJECT (default wbsweep-smoke), WANDB_ENTITY (default: yours),
#   SMOKE_PROCESSES (ranks per trial, default 1)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/setup.sh"
if ! python -c "import sys; from wbsweep.backends.wandb import has_credentials; sys.exit(0 if has_credentials() else 1)"; then
  echo "wandb_smoke: skipped: no W&B key (run \`wandb login\` or set WANDB_API_KEY)"
  exit 0
fi
work="$(mktemp -d)"
cd "$work"
export WANDB_DIR="$work" HF_HUB_OFFLINE=1
args=(--backend wandb --project "${WANDB_PROJECT:-wbsweep-smoke}" --n-trials 2 --json
  --processes-per-trial "${SMOKE_PROCESSES:-1}")
[ -n "${WANDB_ENTITY:-}" ] && args+=(--entity "$WANDB_ENTITY")
sweep=$(wbsweep create "$repo/sweeps/tiny.py" "${args[@]}" \
  | python -c "import json,sys; d=json.load(sys.stdin); print(d['sweep_id']); print(d['url'], file=sys.stderr)")
echo "wandb_smoke: sweep $sweep"
wbsweep agent "$sweep" --workers 1
wbsweep status "$sweep"
wbsweep best "$sweep"
echo "wandb_smoke: ok ($work)"
