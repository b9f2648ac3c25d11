#!/usr/bin/env bash
# Creates .venv and installs Equilibra with its dev tools; re-installs when pyproject.toml changes.
# Needs only Python 3.11+ (and, on a bare Debian, installs python3-venv when venv is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      "$PYTHON" -m venv .venv
    else
      echo "setup: '$PYTHON -m venv' failed; install your distribution's python3-venv" >&2
      exit 1
    fi
  fi
fi

stamp=.venv/.installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  # The neural sequence models' extra: the CPU wheel by its exact version (a range would let
  # pip pick a CUDA build of several GB). Without it their tests are left out.
  .venv/bin/python -m pip install --quiet torch==2.13.0 \
    || echo "setup: torch 2.13.0 not installable here; GRU4Rec/SASRec tests will be skipped" >&2
  echo "$want" > "$stamp"
fi
