#!/usr/bin/env bash
# Install system and Python dependencies (idempotent). Used by scripts/setup.sh, scripts/test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! ldconfig -p 2>/dev/null | grep -q "libusb-1.0.so.0"; then
  echo "[install] system package libusb-1.0-0 (needed by open3d)"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libusb-1.0-0
fi
echo "[install] python packages (pinned by constraints.txt)"
python3 -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test,bench]"
