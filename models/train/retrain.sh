#!/usr/bin/env bash
# Retrains and re-exports every shipped model, measures them, and regenerates the golden fixtures.
#   bash models/train/retrain.sh
# Needs only PyPI: creates <repo>/.venv-train (ignored by git) from the pinned requirements.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${DRT_TRAIN_VENV:-$repo/.venv-train}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r "$here/requirements.txt"
fi
py="$venv/bin/python"
cd "$here"
mkdir -p "$repo/target"
start=$(date +%s)
"$py" train_classifier.py
# The two denoisers train side by side, one thread each: on a 2-core machine that beats running them
# one after the other with two threads each (small convolutions scale poorly across threads).
DRT_TRAIN_THREADS=1 "$py" train_denoiser.py --objective epsilon > "$repo/target/train-epsilon.log" 2>&1 &
eps=$!
DRT_TRAIN_THREADS=1 "$py" train_denoiser.py --objective flow > "$repo/target/train-flow.log" 2>&1 &
flow=$!
wait $eps
wait $flow
tail -n 1 "$repo/target/train-epsilon.log" "$repo/target/train-flow.log"
"$py" train_policy.py
"$py" evaluate.py --model digits
"$py" evaluate.py --model digits-flow
"$py" reference_stats.py
# The int8 calibration records inputs with the drt binary.
(cd "$repo" && cargo build --release --locked --bin drt)
"$py" quantize.py
"$py" "$repo/tests/fixtures/make_golden.py"
echo "retrained everything in $(( ($(date +%s) - start) / 60 )) min"
