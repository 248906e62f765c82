"""`countersign evidence ...` against a live service, with evidence a simulated device uploaded."""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import pytest

from client.output import audit_line
from evidence.display import local, local_date
from retention.purge import verify_deletion_record
from tests.api.test_streaming_read import bad_plaintext_hash
from tests.client.conftest import PURPOSE, Live, assert_out_of_scope, decode, expected_pcm, fields, lines
from tests.conftest import cli_env, countersign
from tests.support.factories import SimDevice, SimRecording

TOKYO = ZoneInfo("Asia/Tokyo")


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """Where the officer saves downloads (apart from the test's server data)."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


def get(live: Live, rid: object, out: Path, *extra: str, token: str = "", check: bool = True) -> CompletedProcess[str]:
    """`countersign evidence get RID --purpose ... -o OUT [extra]` as an officer of north (or `token`)."""
    args = ("evidence", "get", str(rid), "--purpose", PURPOSE, "-o", str(out), *extra)
    return live.run(token or live.officer, *args, check=check)


def custody_actions(live: Live, recording_id: str) -> list[str]:
    return [e["action"] for e in live.get(live.officer, f"/v1/audit/custody/{recording_id}")]


# --------------------------------------------------------------------------- list, show


LIST_HEADER = ["ID", "STARTED", "DURATION", "SITE", "DEVICE", "STAFF", "STATUS", "INCIDENT", "HELD", "RETAIN", "UNTIL"]


def test_list_shows_your_sites_recordings_and_filters_incidents(live: Live) -> None:
    first, second = live.upload(2), live.upload(3)
    live.upload(1, device=live.enrol("counter-s1", "south"))

    header, *listed = lines(live.run(live.officer, "evidence", "list"))
    assert header.split() == LIST_HEADER
    assert [line.split()[0] for line in listed] == [str(second.id)[:8], str(first.id)[:8]]  # newest first, north only
    answer = live.get(live.officer, "/v1/evidence")
    row = listed[0].split()
    # Started in local time (Asia/Tokyo by default), the zone named; 3 one-second segments; the device's
    # name and the staff code from the signed consent record; the retain-until date, local.
    assert row[1:4] == local(second.header["started_at"], TOKYO).split() and row[3] == "JST"
    retain = local_date(answer[0]["retain_until"], TOKYO)
    assert row[4:] == ["0:03", "north", "counter-n1", "S-001", "complete", "-", "-", retain]
    assert answer[0]["device_name"] == "counter-n1" and answer[0]["staff_code"] == "S-001"
    assert answer[0]["duration_seconds"] == 3.0

    assert lines(live.run(live.officer, "evidence", "list", "--incident")) == ["no recordings"]
    live.run(live.officer, "evidence", "flag", str(first.id), "--category", "verbal-abuse")
    incident = lines(live.run(live.officer, "evidence", "list", "--incident"))[1:]
    assert [line.split()[0] for line in incident] == [str(first.id)[:8]]
    assert incident[0].split()[9] == "verbal-abuse"
    routine = lines(live.run(live.officer, "evidence", "list", "--routine"))[1:]
    assert [line.split()[0] for line in routine] == [str(second.id)[:8]]
    assert len(lines(live.run(live.other_officer, "evidence", "list"))) == 2  # the header and south's own


def test_list_json_is_the_services_answer(live: Live) -> None:
    live.upload(2)
    held = live.upload(1)
    live.run(
        live.officer,
        "hold",
        "create",
        "--case",
        "CASE-7",
        "--reason",
        "keep it for the claim",
        "--recording",
        str(held.id),
    )
    printed = json.loads(live.run(live.officer, "evidence", "list", "--json").stdout)
    assert printed == live.get(live.officer, "/v1/evidence")
    row = next(line for line in lines(live.run(live.officer, "evidence", "list")) if line.startswith(str(held.id)[:8]))
    assert row.split()[10] == "CASE-7"  # the HELD column names the case


def test_list_in_another_zone(live: Live) -> None:
    rec = live.upload(1)
    started = rec.header["started_at"]
    utc = lines(live.run(live.officer, "evidence", "list", "--tz", "UTC"))[1].split()
    assert utc[1:4] == local(started, ZoneInfo("UTC")).split() and utc[3] == "UTC"
    env = cli_env(COUNTERSIGN_SERVER=live.server.url, COUNTERSIGN_TOKEN=live.officer, COUNTERSIGN_TZ="Europe/London")
    london = lines(countersign("evidence", "list", env=env))[1].split()
    assert london[1:3] == local(started, ZoneInfo("Europe/London")).split()[:2] and london[3] in ("GMT", "BST")
    wrong = live.run(live.officer, "evidence", "list", "--tz", "Mars/Base", check=False)
    assert wrong.returncode == 2 and "unknown time zone 'Mars/Base'" in wrong.stderr and wrong.stdout == ""


def test_show_prints_the_recording_its_consent_and_segments(live: Live) -> None:
    rec = live.upload(3)
    shown = json.loads(live.run(live.officer, "evidence", "show", str(rec.id), "--json").stdout)
    assert shown == live.get(live.officer, f"/v1/evidence/{rec.id}")  # --json: the service's answer
    assert shown["id"] == str(rec.id)
    assert shown["site"] == "north"
    assert shown["consent"]["outcome"] == "given"
    assert [s["index"] for s in shown["segments"]] == [0, 1, 2]

    printed = live.run(live.officer, "evidence", "show", str(rec.id))
    block, consent = fields(printed), shown["consent"]
    assert block["id"] == str(rec.id) and block["site"] == "north"
    assert block["device"] == f"counter-n1 ({live.device.id})"
    assert block["started"] == local(shown["started_at"], TOKYO) and block["started"].endswith(" JST")
    assert block["duration"] == "0:03" and block["status"] == "complete"
    assert block["consent"] == "given" and block["staff"] == "S-001"
    assert block["notice"] == f"{consent['notice_id']} v{consent['notice_version']}"
    assert block["language"] == consent["language"] and block["notice sha256"] == consent["notice_sha256"]
    assert block["chain"].startswith("3 segment(s) received") and "final segment received" in block["chain"]
    assert block["retain until"] == local(shown["retain_until"], TOKYO)
    assert block["reason"] == shown["retain_reason"] and block["holds"] == "none"
    segments = printed.stdout.split("\n\n")[1].splitlines()
    assert segments[0].split() == ["SEGMENT", "FINAL", "BYTES", "RECEIVED", "CIPHERTEXT", "SHA-256"]
    assert [line.split()[0] for line in segments[1:]] == ["0", "1", "2"] and segments[3].split()[1] == "yes"

    outside = live.run(live.other_officer, "evidence", "show", str(rec.id), check=False)
    assert_out_of_scope(outside)


# --------------------------------------------------------------------------- short ids


def recording_with_id(live: Live, rid: str, device: SimDevice | None = None) -> SimRecording:
    """An uploaded recording whose id is `rid` (the device signs it into the header as any id)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(uuid, "uuid4", lambda: uuid.UUID(rid))
        rec = (device or live.device).new_recording()
    assert str(rec.id) == rid
    dev = device or live.device
    dev.add_segments(rec, 1)
    with httpx.Client(base_url=live.server.url, headers=dev.auth, timeout=30) as http:
        assert http.post("/v1/recordings", json=rec.create_body()).status_code == 201
        seg = rec.segments[0]
        put = http.put(f"/v1/recordings/{rec.id}/segments/0", content=seg.envelope, headers=dev.segment_headers(seg))
        assert put.status_code == 201, put.text
    return rec


def test_short_ids_resolve_within_your_sites(live: Live, out_dir: Path) -> None:
    one = recording_with_id(live, "abcd1111-1111-4111-8111-111111111111")
    two = recording_with_id(live, "abcd2222-2222-4222-8222-222222222222")
    south = live.enrol("counter-s1", "south")
    theirs = recording_with_id(live, "abcd3333-3333-4333-8333-333333333333", device=south)
    alone = recording_with_id(live, "5a5a4444-4444-4444-8444-444444444444", device=south)

    # Unique: any unambiguous prefix of 4 or more characters, in any case; show, custody, flag, get...
    assert fields(live.run(live.officer, "evidence", "show", "abcd1"))["id"] == str(one.id)
    assert fields(live.run(live.officer, "evidence", "show", "ABCD2222"))["id"] == str(two.id)
    assert str(one.id) in live.run(live.officer, "evidence", "custody", "abcd1", "--json").stdout
    flagged = live.run(live.officer, "evidence", "flag", "abcd2", "--category", "verbal-abuse").stdout
    assert flagged.startswith(f"{two.id} flagged verbal-abuse")
    assert get(live, "abcd1", out_dir / "one.flac").returncode == 0

    # Ambiguous: both are listed, nothing is done, usage error. South's abcd3... is neither counted nor listed.
    ambiguous = live.run(live.officer, "evidence", "show", "abcd", check=False)
    assert ambiguous.returncode == 2 and ambiguous.stdout == ""
    assert "ambiguous: 2 recordings start with abcd" in ambiguous.stderr
    assert str(one.id) in ambiguous.stderr and str(two.id) in ambiguous.stderr
    assert str(theirs.id) not in ambiguous.stderr

    # Unknown, or another site's: the same answer, so a prefix reveals nothing about south.
    unknown = live.run(live.officer, "evidence", "show", "ffff", check=False)
    other_site = live.run(live.officer, "evidence", "show", "5a5a", check=False)
    for refused in (unknown, other_site):
        assert refused.returncode == 1 and refused.stdout == ""
        assert "no recording in your sites has an id starting with" in refused.stderr
    assert str(alone.id) not in other_site.stderr
    south_view = live.run(live.officer, "evidence", "show", "abcd3", check=False)
    assert south_view.returncode == 1 and str(theirs.id) not in south_view.stderr
    # ...and south's officer resolves it.
    assert fields(live.run(live.other_officer, "evidence", "show", "abcd"))["id"] == str(theirs.id)

    # Too short, or not hex: refused before asking the service.
    for bad in ("abc", "xyz1", "ab%d"):
        refused = live.run(live.officer, "evidence", "show", bad, check=False)
        assert refused.returncode == 2 and "is not a recording id" in refused.stderr, refused.stderr


# --------------------------------------------------------------------------- get


def test_get_writes_flac_that_decodes_to_the_recorded_audio(live: Live, out_dir: Path) -> None:
    rec = live.upload(3)
    out = out_dir / "evidence.flac"
    got = get(live, rec.id, out)
    data = out.read_bytes()
    assert data[:4] == b"fLaC"
    samples, rate = decode(data)
    assert rate == 16000
    assert np.array_equal(samples, expected_pcm(rec))
    assert got.stdout.startswith(f"wrote {out} (FLAC, {len(data)} bytes; access log entry ")
    seq = int(got.stdout.rstrip().rstrip(")").split()[-1])
    read = next(e for e in live.get(live.auditor, "/v1/audit", after=seq - 1, limit=1))
    assert (read["seq"], read["action"], read["purpose"]) == (seq, "api:evidence:read", PURPOSE)
    assert read["detail"] == {"format": "flac"}
    assert list(out_dir.iterdir()) == [out]  # no temporary file left beside it


def test_get_takes_the_format_from_the_extension(live: Live, out_dir: Path) -> None:
    rec = live.upload(2)
    out = out_dir / "evidence.WAV"
    got = get(live, rec.id, out)
    data = out.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert "(WAV, " in got.stdout
    samples, rate = decode(data)
    assert rate == 16000 and np.array_equal(samples, expected_pcm(rec))

    # An extension that names no format: FLAC, as before; --format wav still asks for WAV.
    other = out_dir / "evidence.audio"
    get(live, rec.id, other)
    assert other.read_bytes()[:4] == b"fLaC"
    explicit = out_dir / "explicit.bin"
    get(live, rec.id, explicit, "--format", "wav")
    assert explicit.read_bytes()[:4] == b"RIFF"


@pytest.mark.parametrize(("fmt", "name"), [("flac", "x.wav"), ("wav", "x.flac")])
def test_get_refuses_a_format_that_contradicts_the_file_name(live: Live, out_dir: Path, fmt: str, name: str) -> None:
    rec = live.upload(1)
    out = out_dir / name
    refused = get(live, rec.id, out, "--format", fmt, check=False)
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: --format {fmt} does not match {name}")
    assert not out.exists() and list(out_dir.iterdir()) == []
    assert "api:evidence:read" not in custody_actions(live, str(rec.id))  # refused before asking the service

    bad = get(live, rec.id, out, "--format", "mp3", check=False)
    assert bad.returncode == 2 and "--format must be flac or wav" in bad.stderr


def test_get_never_overwrites_without_force(live: Live, out_dir: Path) -> None:
    rec = live.upload(2)
    out = out_dir / "evidence.flac"
    out.write_bytes(b"the officer's earlier download")
    refused = get(live, rec.id, out, check=False)
    assert refused.returncode == 2
    assert refused.stderr == f"error: {out} exists; pass --force to replace it\n"
    assert out.read_bytes() == b"the officer's earlier download"
    assert list(out_dir.iterdir()) == [out]
    assert "api:evidence:read" not in custody_actions(live, str(rec.id))

    forced = get(live, rec.id, out, "--force")
    assert forced.stdout.startswith(f"wrote {out} (FLAC")
    samples, _ = decode(out.read_bytes())
    assert np.array_equal(samples, expected_pcm(rec))
    assert list(out_dir.iterdir()) == [out]


def test_get_refused_by_the_service_leaves_no_file(live: Live, out_dir: Path) -> None:
    rec = live.upload(1)
    out = out_dir / "evidence.flac"
    short = live.run(live.officer, "evidence", "get", str(rec.id), "--purpose", "because", "-o", str(out), check=False)
    assert short.returncode != 0 and "422" in short.stderr
    outside = get(live, rec.id, out, token=live.other_officer, check=False)
    assert_out_of_scope(outside)
    assert list(out_dir.iterdir()) == []


class _Truncating(http.server.BaseHTTPRequestHandler):
    """Promises a whole FLAC file, sends its first kilobyte, and hangs up."""

    def do_POST(self) -> None:  # what `evidence get` sends (a do_GET here was never called: 501)
        self.send_response(200)
        self.send_header("Content-Type", "audio/flac")
        self.send_header("Content-Length", "100000")
        self.send_header("X-Countersign-Access-Log", "7")
        self.end_headers()
        self.wfile.write(b"fLaC" + bytes(1020))
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def truncating_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Truncating)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_broken_transfer_leaves_no_audio_file(truncating_server: str, out_dir: Path) -> None:
    out = out_dir / "evidence.flac"
    env = cli_env(COUNTERSIGN_SERVER=truncating_server, COUNTERSIGN_TOKEN="any")
    rid = "00000000-0000-4000-8000-000000000000"
    broken = countersign("evidence", "get", rid, "--purpose", PURPOSE, "-o", str(out), env=env, check=False)
    assert broken.returncode == 1, broken.stdout
    assert broken.stderr.startswith("error: The transfer did not complete: stopped after 1024 bytes"), broken.stderr
    assert "wrote" not in broken.stdout
    assert list(out_dir.iterdir()) == []  # neither the output nor a partial temporary file

    # An existing file is left as it was, even with --force, when the transfer fails.
    out.write_bytes(b"earlier")
    forced = countersign("evidence", "get", rid, "--purpose", PURPOSE, "-o", str(out), "--force", env=env, check=False)
    assert forced.returncode != 0
    assert out.read_bytes() == b"earlier" and list(out_dir.iterdir()) == [out]


def _upload_forged(live: Live) -> SimRecording:
    """Three good segments, then a final one whose plaintext hash the device's key mis-signed.

    The service cannot decrypt at upload, so it accepts it; a read streams segments 0-2 and
    fails on segment 3 after decrypting it, so the server cuts the response off.
    """
    dev = live.device
    rec = dev.new_recording()
    dev.add_segments(rec, 3, final=False)
    rec.segments.append(bad_plaintext_hash(dev, rec, 3))
    with httpx.Client(base_url=live.server.url, headers=dev.auth, timeout=30) as http:
        assert http.post("/v1/recordings", json=rec.create_body()).status_code == 201
        for seg in rec.segments:
            url = f"/v1/recordings/{rec.id}/segments/{seg.index}"
            assert http.put(url, content=seg.envelope, headers=dev.segment_headers(seg)).status_code == 201
    return rec


@pytest.mark.parametrize("name", ["evidence.flac", "evidence.wav"])  # chunked, and with a Content-Length
def test_a_stream_the_service_cuts_off_leaves_no_file(live: Live, out_dir: Path, name: str) -> None:
    rec = _upload_forged(live)
    out = out_dir / name
    failed = get(live, rec.id, out, check=False)
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    assert failed.stderr.startswith("error: The transfer did not complete: stopped after "), failed.stderr
    assert failed.stderr.rstrip().endswith("nothing was written")
    assert failed.stdout == ""
    assert list(out_dir.iterdir()) == []  # neither the file nor its .part

    out.write_bytes(b"earlier")  # --force does not replace a file with a failed read
    assert get(live, rec.id, out, "--force", check=False).returncode == 1
    assert out.read_bytes() == b"earlier" and list(out_dir.iterdir()) == [out]
    actions = custody_actions(live, str(rec.id))
    assert actions[-4:] == ["api:evidence:read", "api:evidence:integrity"] * 2


class _WrongLength(http.server.BaseHTTPRequestHandler):
    """A whole, well-framed WAV response whose file holds fewer frames than announced."""

    def do_POST(self) -> None:
        wav = (
            b"RIFF"
            + (36 + 8).to_bytes(4, "little")
            + b"WAVEfmt "
            + bytes.fromhex("1000000001000100803e0000007d00000200100064617461")
        )
        wav += (8).to_bytes(4, "little") + bytes(8)
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(wav)))
        self.send_header("X-Countersign-Frames", "16000")
        self.end_headers()
        self.wfile.write(wav)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_audio_that_does_not_match_what_was_announced_leaves_no_file(out_dir: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _WrongLength)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = cli_env(COUNTERSIGN_SERVER=f"http://127.0.0.1:{server.server_address[1]}", COUNTERSIGN_TOKEN="any")
        out = out_dir / "evidence.wav"
        rid = "00000000-0000-4000-8000-000000000000"
        got = countersign("evidence", "get", rid, "--purpose", PURPOSE, "-o", str(out), env=env, check=False)
    finally:
        server.shutdown()
        server.server_close()
    assert got.returncode == 1
    assert got.stderr.startswith(
        "error: The audio received is not the file the service announced: the file holds 4 frames, 16000 were"
    ), got.stderr
    assert list(out_dir.iterdir()) == []


# --------------------------------------------------------------------------- custody


def test_custody_lists_every_event_about_the_recording(live: Live, out_dir: Path) -> None:
    rec = live.upload(2)
    other = live.upload(1)
    get(live, rec.id, out_dir / "a.flac")

    header, *custody = lines(live.run(live.officer, "evidence", "custody", str(rec.id)))
    assert header.split() == ["SEQ", "TIME", "OUTCOME", "ACTION", "ACTOR", "TARGET", "PURPOSE"]
    actions = [line.split()[5] for line in custody]
    assert actions == [
        "api:recording:create",
        "api:segment:upload",
        "api:segment:upload",
        "api:evidence:read",
    ]
    assert all(f" recording:{rec.id}" in line for line in custody)
    assert str(other.id) not in "\n".join(custody)
    assert custody[-1].endswith(f'purpose="{PURPOSE}"')
    assert " olivia (user) " in custody[-1]  # who, by name
    assert all(" counter-n1 (device) " in line for line in custody[:3])

    # The same formatter as `audit log`: each line is exactly the entry the auditor sees.
    entries = {e["seq"]: e for e in live.get(live.auditor, "/v1/audit", limit=10000)}
    assert custody == [audit_line(entries[int(line.split()[0])]) for line in custody]
    log = lines(live.run(live.auditor, "audit", "log"))
    assert set(custody) <= set(log)

    auditor = lines(live.run(live.auditor, "evidence", "custody", str(rec.id)))[1:]
    assert auditor[: len(custody)] == custody  # plus the officer's custody read, logged after it
    assert auditor[len(custody)].split()[5] == "api:evidence:custody"
    as_json = json.loads(live.run(live.auditor, "evidence", "custody", str(rec.id), "--json").stdout)
    assert [e["seq"] for e in as_json][: len(custody)] == [int(line.split()[0]) for line in custody]
    assert as_json[-1]["actor_name"] == "audrey"  # the auditor's own (text) custody read, named
    short = live.run(live.auditor, "evidence", "custody", str(rec.id)[:8], check=False)
    assert short.returncode == 1 and "short ids are for officers: give the full id" in short.stderr


# --------------------------------------------------------------------------- retention: flag, extend, delete


def test_flag_and_extend_move_the_retain_until_date(live: Live) -> None:
    rec = live.upload(1)
    flagged = live.run(live.officer, "evidence", "flag", str(rec.id), "--category", "verbal-abuse").stdout
    meta = live.get(live.officer, f"/v1/evidence/{rec.id}")
    assert meta["incident_category"] == "verbal-abuse"
    assert flagged == (
        f"{rec.id} flagged verbal-abuse; retain until {meta['retain_until']} ({meta['retain_reason']})\n"
    )

    extend = ("evidence", "extend", str(rec.id), "--until")
    extended = live.run(live.officer, *extend, "2040-04-01T00:00:00+09:00", "--reason", "litigation expected").stdout
    meta = live.get(live.officer, f"/v1/evidence/{rec.id}")
    assert meta["retain_until"].startswith("2040-03-31T15:00:00")  # the same instant, stored in UTC
    assert extended == f"{rec.id} retained until 2040-04-01T00:00:00+09:00 ({meta['retain_reason']})\n"
    changes = [a for a in custody_actions(live, str(rec.id)) if a.startswith("api:recording:")]
    assert changes == ["api:recording:create", "api:recording:flag", "api:recording:extend"]

    shorter = live.run(live.officer, *extend, "2035-01-01T00:00:00Z", "--reason", "shorten the date", check=False)
    assert shorter.returncode != 0 and "409" in shorter.stderr


def test_delete_then_tombstone(live: Live, out_dir: Path) -> None:
    """One officer asks, a second approves (the requester cannot), then the tombstone is what remains."""
    rec = live.upload(2)
    second = live.user("otto", "officer", ["north"])
    asked = live.run(live.officer, "evidence", "delete", str(rec.id), "--reason", "recorded by mistake, no consent")
    request_id = asked.stdout.split()[2]
    assert asked.stdout.startswith(f"deletion requested: {request_id} for recording {rec.id}\n")
    assert "unless cancelled" in asked.stdout
    listed = live.run(second, "evidence", "deletions").stdout
    assert request_id in listed and "pending" in listed and "recorded by mistake, no consent" in listed
    own = live.run(live.officer, "evidence", "approve-deletion", request_id, check=False)
    assert own.returncode == 1 and "second officer" in own.stderr
    assert live.get(live.officer, f"/v1/evidence/{rec.id}")["id"] == str(rec.id)  # still there

    deleted = live.run(second, "evidence", "approve-deletion", request_id)
    assert deleted.stdout in (
        f"{rec.id} deleted: keys destroyed, objects removed, tombstone signed\n",
        f"{rec.id} keys destroyed (unreadable); the next retention run removes its objects\n",
    )

    tomb = json.loads(live.run(live.officer, "evidence", "tombstone", str(rec.id)).stdout)
    assert tomb["recording_id"] == str(rec.id)
    log = live.get(live.auditor, "/v1/audit", limit=10000)
    shred = next(e for e in log if e["action"] == "retention:recording:shred" and e["target"] == f"recording:{rec.id}")
    assert shred["purpose"] == "recorded by mistake, no consent"
    assert tomb["site"] == "north" and tomb["actor"] == shred["actor"]
    assert "recorded by mistake, no consent" in json.dumps(tomb)
    if tomb["signature"] is not None:
        assert tomb["service_public_key"] == live.public_key
        verify_deletion_record(tomb["record"], bytes.fromhex(tomb["signature"]), bytes.fromhex(live.public_key))

    gone = get(live, rec.id, out_dir / "x.flac", check=False)
    assert gone.returncode != 0 and list(out_dir.iterdir()) == []


def test_delete_is_refused_under_a_hold(live: Live) -> None:
    rec = live.upload(1)
    hold = ("hold", "create", "--case", "2026-LIT-014", "--reason", "litigation hold, keep it", "--recording")
    live.run(live.officer, *hold, str(rec.id))
    delete = ("evidence", "delete", str(rec.id), "--reason", "data subject asked us")
    refused = live.run(live.officer, *delete, check=False)
    assert refused.returncode != 0
    assert "409" in refused.stderr and "2026-LIT-014" in refused.stderr
    assert refused.stdout == ""
    assert live.get(live.officer, f"/v1/evidence/{rec.id}")["id"] == str(rec.id)


def test_tombstone_of_a_live_recording_is_refused(live: Live) -> None:
    rec = live.upload(1)
    refused = live.run(live.officer, "evidence", "tombstone", str(rec.id), check=False)
    assert refused.returncode != 0 and refused.stdout == ""
    assert "404" in refused.stderr or "409" in refused.stderr


def test_a_deletion_request_can_be_cancelled(live: Live) -> None:
    rec = live.upload(1)
    asked = live.run(live.officer, "evidence", "delete", str(rec.id), "--reason", "asked by the customer today")
    request_id = asked.stdout.split()[2]
    cancelled = live.run(live.officer, "evidence", "cancel-deletion", request_id, "--reason", "customer changed mind")
    assert cancelled.stdout == f"deletion request {request_id} cancelled; recording {rec.id} stays\n"
    assert live.run(live.officer, "evidence", "deletions").stdout == "no open deletion requests\n"
    assert "cancelled" in live.run(live.officer, "evidence", "deletions", "--all").stdout
    assert live.get(live.officer, f"/v1/evidence/{rec.id}")["id"] == str(rec.id)
