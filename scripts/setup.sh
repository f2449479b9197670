#!/usr/bin/env bash
# Set up a fresh machine for synthseq: system packages (when root), .venv, pinned Python deps.
# Usage: scripts/setup.sh [--dev]   (--dev adds the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="libusb-1.0-0 libegl1 libegl-mesa0 libgl1-mesa-dri libvulkan1 mesa-vulkan-drivers"
missing=""
if command -v dpkg-query >/dev/null 2>&1; then
  for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = "0" ]; then
    echo "[setup] installing system packages:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "[setup] missing system packages; run as root:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.synthseq-deps
want=$(cat requirements.txt $([ "${1:-}" = "--dev" ] && echo requirements-dev.txt) setup.cfg | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || ! grep -qx "$want" "$stamp"; then
  echo "[setup] installing Python dependencies (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -r requirements.txt
  [ "${1:-}" = "--dev" ] && .venv/bin/python -m pip install -q -r requirements-dev.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$want" >> "$stamp"
else
  .venv/bin/python -m pip install -q --no-deps -e . >/dev/null
fi
echo "[setup] ready: $(.venv/bin/python -c 'import synthseq; print("synthseq", synthseq.__version__)')"
