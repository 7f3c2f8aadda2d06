#!/usr/bin/env bash
# One command: install everything, then run the full test suite on CPU (fails on any failure and on "no tests").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export WANDB_MODE=disabled ROBUST_NO_PROGRESS=1
set +e
python3 -m pytest -q -p no:cacheprovider --timeout 900 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
