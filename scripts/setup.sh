#!/usr/bin/env bash
# One command: install everything, generate the embedded synthetic dataset if needed, corrupt it.
#   bash scripts/setup.sh [DATA_ROOT] [OUT]
# DATA_ROOT defaults to data/synth (generated when missing); OUT defaults to outputs/corrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-data/synth}"
OUT="${2:-outputs/corrupted}"
bash scripts/install.sh
if [ -z "${1:-}" ]; then
  python3 -m robust.synth --out "$DATA" --buildings 1 --points 2 --views 2 --size 256 --seed 0  # resumable: existing views are skipped
fi
python3 -m robust.corrupt --dataset taskonomy --data-root "$DATA" --out "$OUT" --corruptions all --severities 1-5 --preview
echo
echo "Corrupted dataset: $OUT/<corruption>/<severity>/<building>/<rgb file>  (manifest: $OUT/manifest.json)"
echo "Preview grid:      $OUT/preview.png"
