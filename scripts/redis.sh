#!/usr/bin/env bash
# Makes Debian's redis-server available for the tests (they start their own on a free port).
# Installs it when missing (needs root and apt-get); exits 1 when it cannot.
set -euo pipefail
command -v redis-server >/dev/null && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "redis.sh: installing Debian's redis-server" >&2
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -qq redis-server || { apt-get update -qq && apt-get install -y -qq redis-server; }; } >&2
  # The package starts a system server on 6379; the tests do not need it.
  (service redis-server stop || true) >/dev/null 2>&1
  command -v redis-server >/dev/null && exit 0
fi
echo "redis.sh: redis-server is not installed and cannot be installed here" >&2
exit 1
