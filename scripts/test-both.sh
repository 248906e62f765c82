#!/usr/bin/env bash
# The suite's two passes side by side: SQLite + the filesystem store, and PostgreSQL + S3.
#
# Each pass is one pytest process, mostly one busy core with waits on subprocesses, servers and
# sockets between; run one after the other they took 83 minutes of CI's 90 on a slow 2-core host.
# Side by side they share the two cores. They share nothing else: every test makes its own data
# directory, schema, bucket, ports and PulseAudio daemon. Each line is labelled with its pass;
# each pass's summary, failures and re-runs are repeated at the end, and the exit status fails if
# either pass failed.
#
# A pass that hangs must not use up CI's whole time limit with nothing to show: a test that runs
# past pytest-timeout's limit (pyproject.toml) fails with every thread's stack and the pass goes
# on; a pass still running after PASS_TIMEOUT seconds (default 4500, inside CI's 5400 with the
# install before it) is shown with py-spy's dump of each of its Python processes, then stopped;
# so is one that printed its summary but has not exited EXIT_GRACE seconds later (default 120),
# whose summary then decides.
# pytest writes to its log file, not into a pipe, so a process a test leaked that still holds its
# output cannot keep this script waiting after pytest has exited.
#
#   scripts/test-both.sh [pytest arguments for both passes]
set -uo pipefail
cd "$(dirname "$0")/.."
bin="${VENV:-.venv}/bin"
limit="${PASS_TIMEOUT:-4500}"
exit_grace="${EXIT_GRACE:-120}"
logs="$(mktemp -d "${TMPDIR:-/tmp}/countersign-test-both.XXXXXX")"
trap 'rm -rf "$logs"' EXIT

descendants() {  # every process under $1, children before grandchildren
    local child
    for child in $(pgrep -P "$1"); do
        echo "$child"
        descendants "$child"
    done
}

show_hang() {  # label, pid, why: what a pass that overran is doing; then stop it and its children
    local label=$1 pid=$2 why=$3 each
    local family=("$pid" $(descendants "$pid"))
    echo "[$label] $why: each of its Python processes' stacks (py-spy dump), then it is stopped"
    ps -o pid=,etime=,args= $(printf -- '-p %s ' "${family[@]}") | cut -c1-200 | sed "s/^/[$label] ps: /"
    for each in "${family[@]}"; do
        if "$bin/py-spy" dump --pid "$each" > "$logs/$label.dump" 2>&1; then
            sed "s/^/[$label] $each: /" "$logs/$label.dump"
            # the innermost frames of this repository's code, or of a test function: where it waits
            grep -E "^ +test[A-Za-z0-9_]* \(|\((tests|api|recorder|retention|client|evidence|consent|countersign)/" \
                "$logs/$label.dump" | head -n 3 | sed "s/^ */$each: /" >> "$logs/$label.hung"
        fi
    done
    kill -TERM "${family[@]}" 2>/dev/null
    sleep 5
    kill -KILL "${family[@]}" 2>/dev/null
}

# pytest's last line: "2553 passed, 1 skipped in 1551.35s (0:25:51)", "1 failed, 2 passed, 1 rerun in 9.1s"
summary='^=* ?[0-9]+ (passed|failed|skipped|errors?|deselected|xfailed|xpassed|warnings?|rerun)[^=]* in [0-9.]+s( \([0-9:]+\))?( =*)?$'

pass() {  # label, then the value for COUNTERSIGN_TEST_BACKEND
    local label=$1 backend=$2 pid started=$SECONDS summarised="" last
    shift 2
    COUNTERSIGN_TEST_BACKEND="$backend" "$bin/pytest" -q -p no:cacheprovider "$@" > "$logs/$label.log" 2>&1 &
    pid=$!
    tail -n +1 -F --pid="$pid" "$logs/$label.log" 2>/dev/null | sed -u "s/^/[$label] /" &
    while kill -0 "$pid" 2>/dev/null; do
        if [ -z "$summarised" ] && tail -n 1 "$logs/$label.log" | grep -qE "$summary"; then
            summarised=$SECONDS
        fi
        # Every test ran and the summary is out, but the process does not end (a thread or an exit
        # handler a test left behind): shown and stopped, and the summary decides, as pytest would.
        if [ -n "$summarised" ] && (( SECONDS - summarised > exit_grace )); then
            last=$(tail -n 1 "$logs/$label.log")
            show_hang "$label" "$pid" "printed its summary $exit_grace s ago and has not exited"
            echo "stopped: it printed its summary but had not exited $exit_grace s later" >> "$logs/$label.notes"
            wait "$pid"
            ! grep -qE "[0-9]+ (failed|errors?)" <<< "$last"
            return
        fi
        if (( SECONDS - started > limit )); then
            show_hang "$label" "$pid" "still running after $limit s"
            echo "stopped: it overran PASS_TIMEOUT=$limit s" >> "$logs/$label.notes"
            break
        fi
        sleep 2
    done
    wait "$pid"
}

pass sqlite-fs sqlite-fs "$@" &
sqlite=$!
pass postgres-s3 postgres-s3 "$@" &
postgres=$!
wait "$sqlite"
sqlite_status=$?
wait "$postgres"
postgres_status=$?
sleep 1  # the labelled copies (tail --pid) print what is left of each log

echo
for label in sqlite-fs postgres-s3; do
    grep -E "^(FAILED|ERROR|RERUN) " "$logs/$label.log" | head -n 20 | sed "s/^/== $label: /"
    if [ -f "$logs/$label.hung" ]; then sed "s/^/== $label: hung in /" "$logs/$label.hung"; fi
    last=$(grep -E "$summary" "$logs/$label.log" | tail -n 1)
    echo "== $label: ${last:-$(tail -n 1 "$logs/$label.log")}"
    if [ -f "$logs/$label.notes" ]; then sed "s/^/== $label: /" "$logs/$label.notes"; fi
done
if [ "$sqlite_status" -ne 0 ] || [ "$postgres_status" -ne 0 ]; then
    echo "test-both: sqlite-fs exited $sqlite_status, postgres-s3 exited $postgres_status" >&2
    exit 1
fi
