#!/usr/bin/env bash
# Makes `fit --engine spark` runnable: Java 17+, PostgreSQL's JDBC driver (Spark reads the event
# store over JDBC) and a native BLAS for MLlib, all from Debian's packages. pyspark itself comes
# with the project's dev (or spark) extra. Exits 1 when something is missing and cannot be installed.
set -euo pipefail
missing=()
command -v java >/dev/null || missing+=(default-jre-headless)
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
[ -e /usr/lib/x86_64-linux-gnu/libblas.so.3 ] || [ -e /usr/lib/aarch64-linux-gnu/libblas.so.3 ] \
  || missing+=(libopenblas0)
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "spark.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -qq "${missing[@]}" \
      || { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; }; } >&2
  command -v java >/dev/null && [ -f /usr/share/java/postgresql.jar ] && exit 0
fi
echo "spark.sh: Java or the PostgreSQL JDBC driver is missing and cannot be installed here" >&2
exit 1
