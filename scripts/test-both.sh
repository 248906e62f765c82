#!/usr/bin/env bash
# The suite's two passes side by side: SQLite + the filesystem store, and PostgreSQL + S3.
#
# Each pass is one pytest process, mostly one busy core with waits on subprocesses, servers and
# sockets between; run one after the other they took 83 minutes of CI's 90 on a slow 2-core host.
# Side by side they share the two cores. They share nothing else: every test makes its own data
# directory, schema, bucket, ports and PulseAudio daemon. Each line is labelled with its pass;
# each pass's summary is repeated at the end, and the exit status fails if either pass failed.
#
#   scripts/test-both.sh [pytest arguments for both passes]
set -uo pipefail
cd "$(dirname "$0")/.."
bin="${VENV:-.venv}/bin"
logs="$(mktemp -d "${TMPDIR:-/tmp}/countersign-test-both.XXXXXX")"
trap 'rm -rf "$logs"' EXIT

pass() {  # label, then the environment assignment for COUNTERSIGN_TEST_BACKEND
    local label=$1 backend=$2
    shift 2
    COUNTERSIGN_TEST_BACKEND="$backend" "$bin/pytest" -q -p no:cacheprovider "$@" 2>&1 \
        | tee "$logs/$label.log" | sed -u "s/^/[$label] /"
    return "${PIPESTATUS[0]}"
}

pass sqlite-fs sqlite-fs "$@" &
sqlite=$!
pass postgres-s3 postgres-s3 "$@" &
postgres=$!
wait "$sqlite"
sqlite_status=$?
wait "$postgres"
postgres_status=$?

echo
for label in sqlite-fs postgres-s3; do
    echo "== $label: $(tail -n 1 "$logs/$label.log")"
done
if [ "$sqlite_status" -ne 0 ] || [ "$postgres_status" -ne 0 ]; then
    echo "test-both: sqlite-fs exited $sqlite_status, postgres-s3 exited $postgres_status" >&2
    exit 1
fi
