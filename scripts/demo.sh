#!/usr/bin/env bash
# The main job on the embedded default (SQLite, synthetic shop): sets up .venv, runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/equilibra demo "$@"
