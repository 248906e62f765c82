#!/usr/bin/env bash
# The whole evidence loop once, on embedded defaults, in a throw-away directory:
# init -> admin setup -> enrol a counter -> consent notice -> record -> upload
# -> officer search and purpose-bound read -> audit log -> plaintext scan.
set -euo pipefail
export COUNTERSIGN_ENV=development
work=$(mktemp -d /tmp/countersign-demo.XXXXXX)
port=${PORT:-8765}
server="http://127.0.0.1:$port"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() { [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

step "1. Initialise the service (SQLite + files in $work/data): keys, schema, first admin"
countersign server init --data "$work/data" | tee "$work/init.txt"
admin=$(awk '/admin token/ {print $NF}' "$work/init.txt")

step "2. Start the service on $server (docs at $server/docs)"
countersign server run --data "$work/data" --port "$port" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 50); do curl -sf "$server/healthz" >/dev/null && break; sleep 0.2; done
curl -s "$server/healthz"; echo

step "3. Admin: a site, an officer, an auditor, a counter device (one-time enrolment code)"
export COUNTERSIGN_SERVER="$server"
COUNTERSIGN_TOKEN=$admin countersign admin site add minato-ward --name "Minato Ward Office"
officer=$(COUNTERSIGN_TOKEN=$admin countersign admin user add sato --role officer --site minato-ward | tee /dev/stderr | awk '/^token \(shown once\)/ {print $NF}')
auditor=$(COUNTERSIGN_TOKEN=$admin countersign admin user add ito --role auditor | tee /dev/stderr | awk '/^token \(shown once\)/ {print $NF}')
code=$(COUNTERSIGN_TOKEN=$admin countersign admin device add counter-3 --site minato-ward | tee /dev/stderr | awk '/enrolment code/ {print $NF}')

step "3b. Access to evidence takes two people: the first auditor is approved on the server, the officer by the auditor"
countersign server approve-user ito --data "$work/data"
COUNTERSIGN_TOKEN=$auditor countersign admin user approve sato

step "4. Counter device enrols: its signing key is made here and never leaves"
countersign recorder enroll --server "$server" --code "$code" --home "$work/device"
ls -l "$work/device"

step "5. A customer interaction (synthesised speech stands in for the microphone)"
if command -v espeak-ng >/dev/null && command -v sox >/dev/null; then
  espeak-ng -w "$work/raw.wav" "I have been waiting for an hour. Call your supervisor right now. This is unacceptable."
  sox "$work/raw.wav" -r 16000 -c 1 -b 16 "$work/speech.wav"
else
  python3 -c "import numpy as n, soundfile as s; t=n.arange(16000*6)/16000; s.write('$work/speech.wav', (0.3*n.sin(2*n.pi*440*t)*32767).astype('int16'), 16000)"
fi

step "6. Consent notice shown, staff confirms (Enter), recording, encrypted segments upload as they are made"
printf '\n' | countersign recorder record --home "$work/device" --input "$work/speech.wav" --language en \
  --staff S-042 --incident verbal-abuse --segment-seconds 2

step "7. The customer at the next counter objects: nothing is recorded, the objection is logged"
countersign recorder record --home "$work/device" --consent objected --language ja --input "$work/speech.wav"

step "8. Officer searches the site's evidence"
export COUNTERSIGN_TOKEN=$officer
countersign evidence list
rid=$(countersign evidence list --incident | awk 'NR==1 {print $1}')
countersign evidence show "$rid" | head -25

step "9. Officer retrieves the audio for a stated purpose (logged before any byte is sent)"
countersign evidence get "$rid" --purpose "Complaint 2026-118: review of verbal abuse at counter 3" -o "$work/evidence.wav" --format wav
python3 -c "import soundfile as s; i=s.info('$work/evidence.wav'); print(f'retrieved {i.duration:.1f} s, {i.samplerate} Hz, {i.channels} channel')"

step "10. An administrator tries to listen: refused, and the refusal is logged"
COUNTERSIGN_TOKEN=$admin countersign evidence get "$rid" --purpose "just curious about this" -o "$work/nope.wav" || true

step "11. Auditor reads the access log, exports it, and verifies it offline with the service's public key"
COUNTERSIGN_TOKEN=$auditor countersign audit log
COUNTERSIGN_TOKEN=$auditor countersign audit export -o "$work/audit.jsonl"
countersign audit verify "$work/audit.jsonl" --public-key "$(awk '/service public key/ {print $NF}' "$work/init.txt")"
countersign evidence custody "$rid"

step "12. No plaintext audio on the device or in the service's data directory"
if grep -rlaE 'RIFF|fLaC|OggS' "$work/device" "$work/data"; then echo "PLAINTEXT FOUND"; exit 1; fi
echo "scanned $(find "$work/device" "$work/data" -type f | wc -l) files: no RIFF/FLAC/Ogg headers"
echo; echo "demo files in $work"
