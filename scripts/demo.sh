#!/usr/bin/env bash
# The main job: a real hyperparameter sweep on the local backend, on CPU, offline.
# Fine-tunes all-MiniLM-L6-v2 on Rotten Tomatoes reviews (both shipped in
# packages), 4 trials by Bayesian search over 2 workers, then prints the BestRun.
# Set DEMO_TRIALS / DEMO_WORKERS / DEMO_PROCESSES to change the size, and
# DEMO_MODE=cold to start a new accelerate launch per trial instead of warm workers.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/setup.sh"
export WBSWEEP_RT_DATA="${WBSWEEP_RT_DATA:-$(bash "$repo/scripts/fetch_data.sh")}"
work="${DEMO_DIR:-$repo/demo-run}"
mkdir -p "$work"
cd "$work"
export WBSWEEP_STORE="$work/.wbsweep/store.db" HF_HUB_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true
sweep_id=$(wbsweep create "$repo/sweeps/minilm_rotten_tomatoes.py" --method bayes \
  --n-trials "${DEMO_TRIALS:-4}" --processes-per-trial "${DEMO_PROCESSES:-1}" --json | python -c "import json,sys; print(json.load(sys.stdin)['sweep_id'])")
echo "created sweep $sweep_id"
wbsweep agent "$sweep_id" --workers "${DEMO_WORKERS:-2}" "--${DEMO_MODE:-warm}"
wbsweep status "$sweep_id"
wbsweep best "$sweep_id"
