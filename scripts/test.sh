#!/usr/bin/env bash
# The test command: sets up .venv, starts PostgreSQL, installs redis-server, Java (for Spark) and
# Chromium (when possible), runs ruff and the whole pytest suite (SQLite and PostgreSQL,
# in-process and Redis online state, a local[2] Spark; the dashboard in a real browser).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

if [ -z "${EQUILIBRA_TEST_POSTGRES:-}" ]; then
  if url=$(bash scripts/postgres.sh); then
    export EQUILIBRA_TEST_POSTGRES="$url"
  elif [ "${CI:-}" = true ] || [ "${EQUILIBRA_REQUIRE_POSTGRES:-}" = 1 ]; then
    echo "test.sh: PostgreSQL is required here but could not be started" >&2
    exit 1
  else
    echo "test.sh: no PostgreSQL; its conformance cases will be skipped" >&2
  fi
fi

# The shared online state's tests start their own redis-server.
if ! bash scripts/redis.sh; then
  if [ "${CI:-}" = true ] || [ "${EQUILIBRA_REQUIRE_POSTGRES:-}" = 1 ]; then
    echo "test.sh: redis-server is required here but could not be installed" >&2
    exit 1
  fi
  echo "test.sh: no redis-server; the Redis cases will be skipped" >&2
fi

# `fit --engine spark` tests run a local[2] Spark: Java and the JDBC driver from Debian.
if ! bash scripts/spark.sh; then
  if [ "${CI:-}" = true ] || [ "${EQUILIBRA_REQUIRE_POSTGRES:-}" = 1 ]; then
    echo "test.sh: Java for Spark is required here but could not be installed" >&2
    exit 1
  fi
  echo "test.sh: no Java; the Spark cases will be skipped" >&2
fi

# The dashboard's browser test drives Debian's headless Chromium.
if ! bash scripts/chromium.sh; then
  if [ "${CI:-}" = true ] || [ "${EQUILIBRA_REQUIRE_POSTGRES:-}" = 1 ]; then
    echo "test.sh: chromium is required here but could not be installed" >&2
    exit 1
  fi
  echo "test.sh: no chromium; the browser test will be skipped" >&2
elif [ "${CI:-}" = true ] || [ "${EQUILIBRA_REQUIRE_POSTGRES:-}" = 1 ]; then
  export EQUILIBRA_REQUIRE_BROWSER=1
fi

.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
exec .venv/bin/pytest "$@"
