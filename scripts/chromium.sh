#!/usr/bin/env bash
# Makes Debian's Chromium and its ChromeDriver available for the dashboard's browser test
# (tests/test_dashboard_browser.py). Installs them when missing (needs root and apt-get); exits 1
# when it cannot. Nothing is downloaded at test time: Selenium drives these system binaries.
set -euo pipefail
log() { echo "chromium.sh: $*" >&2; }

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  log "installing Debian's chromium and chromium-driver"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq chromium chromium-driver >&2 \
    || { apt-get update -qq >&2 && apt-get install -y -qq chromium chromium-driver >&2; }
  exit 0
fi
log "chromium is not installed and cannot be installed here (needs root and apt-get)"
exit 1
