#!/usr/bin/env bash
# Make sure the PostgreSQL the PostgreSQL+S3 test run uses is answering.
# It checks COUNTERSIGN_TEST_PG_HOST/PORT (default 127.0.0.1:5432); if nothing answers and
# we are root on a Debian-style host with a local cluster, it starts that cluster. Otherwise
# it fails with what to do, rather than letting 900 tests fail one by one.
set -euo pipefail
host="${COUNTERSIGN_TEST_PG_HOST:-127.0.0.1}"
port="${COUNTERSIGN_TEST_PG_PORT:-5432}"

answering() { pg_isready -q -h "$host" -p "$port" -t 2; }

if ! command -v pg_isready >/dev/null; then
    echo "ensure-postgres: pg_isready not found: install postgresql-client (and a server), or set" >&2
    echo "  COUNTERSIGN_TEST_PG_URL to a reachable PostgreSQL" >&2
    exit 1
fi
answering && exit 0

if [ "$(id -u)" -eq 0 ] && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    for version in $(ls /etc/postgresql); do
        echo "ensure-postgres: starting local cluster $version/main"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
    for _ in $(seq 1 30); do
        answering && exit 0
        sleep 1
    done
fi
echo "ensure-postgres: no PostgreSQL answering at $host:$port and could not start one" >&2
echo "  (start it yourself, e.g. as root: pg_ctlcluster --skip-systemctl-redirect 15 main start," >&2
echo "   or point COUNTERSIGN_TEST_PG_URL / COUNTERSIGN_TEST_PG_HOST at one)" >&2
exit 1
