#!/usr/bin/env bash
# Makes a local PostgreSQL server available for the tests and prints its URL on stdout.
# Installs Debian's postgresql when missing (needs root), starts the cluster, and creates the
# role and database idempotently. Prints nothing and exits 1 when it cannot.
set -euo pipefail
ROLE=equilibra
DB=equilibra_test
URL="postgresql://$ROLE:$ROLE@127.0.0.1:5432/$DB"

log() { echo "postgres.sh: $*" >&2; }

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    log "installing Debian's postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
  else
    log "PostgreSQL is not installed and cannot be installed here (needs root and apt-get)"
    exit 1
  fi
fi

version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$version main"; then
  log "creating cluster $version/main"
  pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -qx online; then
  log "starting cluster $version/main"
  pg_ctlcluster "$version" main start >&2
fi

as_postgres() { runuser -u postgres -- "$@"; }
for _ in $(seq 1 30); do
  as_postgres psql -qAtc "SELECT 1" >/dev/null 2>&1 && break
  sleep 1
done
if [ "$(as_postgres psql -qAtc "SELECT 1 FROM pg_roles WHERE rolname='$ROLE'")" != 1 ]; then
  as_postgres psql -qc "CREATE ROLE $ROLE LOGIN PASSWORD '$ROLE' CREATEDB" >&2
fi
if [ "$(as_postgres psql -qAtc "SELECT 1 FROM pg_database WHERE datname='$DB'")" != 1 ]; then
  as_postgres createdb -O "$ROLE" "$DB" >&2
fi
echo "$URL"
