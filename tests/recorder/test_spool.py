"""recorder.spool in-process: durable writes, accounting, crash recovery, listing, removal."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import threading
from pathlib import Path
from typing import Any

import nacl.public
import numpy as np
import pytest
from typer.testing import CliRunner

from consent.records import ConsentRecord
from recorder.cli import app as recorder_app
from recorder.errors import SpoolFull
from recorder.home import DeviceHome
from recorder.recording import LiveRecording, record_objection
from recorder.spool import Spool, SpooledRecording
from tests.recorder.support import RATE, assert_no_plaintext, data_key, decrypt_segments, finals
from tests.support.factories import consent_record, tone

META = {"header": {"recording_id": "r1"}, "header_signature": "00", "sealed_keys": [], "state": "recording"}


def statement(final: bool = False, **extra: Any) -> dict[str, Any]:
    return {"final": final, "plaintext_sha256": "aa", "prev_hash": "bb", "signature": "cc", **extra}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def crash(recording: LiveRecording) -> None:
    """What SIGKILL does to a recorder: the kernel closes its lock file; nothing else happens."""
    assert recording._lock is not None
    recording._lock.close()


def live(home: DeviceHome, spool: Spool, consent: ConsentRecord, segments: int, final: bool = True) -> LiveRecording:
    recording = LiveRecording(home, spool, consent, RATE, 1, 1.0)
    for i in range(segments):
        recording.add(tone(1.0, seed=i), final and i == segments - 1)
    return recording


# --------------------------------------------------------------------------- create, write


def test_create_writes_a_private_folder_with_its_meta(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 10_000)
    recording = spool.create("r1", META)
    assert mode(tmp_path / "spool") == 0o700
    assert mode(recording.folder) == 0o700
    assert mode(recording.folder / "recording.json") == 0o600
    assert recording.meta() == META
    assert [r.id for r in spool.recordings()] == ["r1"]
    assert recording.segments() == [] and recording.unsent() == []
    assert not recording.opened and not recording.has_final()
    assert not list(recording.folder.glob(".*")), "a temp file was left behind"


def test_create_never_reuses_a_folder(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 10_000)
    first = spool.create("r1", META)
    first.write_segment(0, b"sealed", statement())
    with pytest.raises(FileExistsError):
        spool.create("r1", {**META, "state": "other"})
    assert first.meta() == META and first.segments() == [0]


def test_write_segment_is_fsynced_and_renamed_envelope_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recording = Spool(tmp_path / "spool", 10_000).create("r1", META)
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def temp(name: str) -> str:  # temp names carry the writer's pid and thread: keep the part that matters
        return re.sub(r"^\.(\w+\.\w+)\.[\w-]+\.tmp$", r".\1.tmp", name)

    def fsync(fd: int) -> None:
        events.append(("fsync", temp(Path(os.readlink(f"/proc/self/fd/{fd}")).name)))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("rename", f"{temp(Path(src).name)}->{Path(dst).name}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    recording.write_segment(0, b"\x01sealed bytes", statement())
    assert events == [
        ("fsync", ".000000.seg.tmp"),  # data on disk before it gets its name
        ("rename", ".000000.seg.tmp->000000.seg"),
        ("fsync", "r1"),  # and the name on disk before the statement marks it complete
        ("fsync", ".000000.json.tmp"),
        ("rename", ".000000.json.tmp->000000.json"),
        ("fsync", "r1"),
    ]
    envelope, meta = recording.segment(0)
    assert envelope == b"\x01sealed bytes" and meta == statement()
    assert mode(recording.folder / "000000.seg") == 0o600


def test_a_segment_without_its_statement_is_not_complete(tmp_path: Path) -> None:
    """A crash between the envelope and the statement leaves a segment nobody sends."""
    recording = Spool(tmp_path / "spool", 10_000).create("r1", META)
    recording.write_segment(0, b"zero", statement())
    (recording.folder / "000001.seg").write_bytes(b"one, but no statement")
    (recording.folder / ".000002.seg.tmp").write_bytes(b"half written")
    assert recording.segments() == [0]
    assert recording.unsent() == [0]


def test_segments_come_in_numeric_order_and_sent_ones_drop_out(tmp_path: Path) -> None:
    recording = Spool(tmp_path / "spool", 10**6).create("r1", META)
    for index in (11, 2, 0, 10, 1):
        recording.write_segment(index, f"env{index}".encode(), statement(index=index))
    assert recording.segments() == [0, 1, 2, 10, 11]
    recording.mark_sent(1)
    recording.mark_sent(10)
    assert recording.unsent() == [0, 2, 11]
    assert recording.is_sent(1) and not recording.is_sent(2)
    assert recording.segment(10) == (b"env10", statement(index=10))


def test_spool_holds_ciphertext_only(
    home: DeviceHome, spool: Spool, consent: ConsentRecord, evidence_private: nacl.public.PrivateKey
) -> None:
    recording = live(home, spool, consent, 3)
    source = np.concatenate([tone(1.0, seed=i) for i in range(3)])
    key = data_key(recording.spooled, evidence_private)
    assert assert_no_plaintext(home.spool_dir, source, key) >= 7
    # ... and it is the audio, sealed: the evidence private key opens it again.
    assert np.array_equal(np.concatenate(decrypt_segments(recording.spooled, evidence_private)), source)


# --------------------------------------------------------------------------- accounting


def test_check_room_against_the_limit(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 10_000)
    recording = spool.create("r1", META)
    recording.write_segment(0, b"x" * 3000, statement())
    used = spool.used_bytes()
    assert used == sum(p.stat().st_size for p in recording.folder.iterdir())
    spool.check_room(10_000 - used)  # exactly fits
    with pytest.raises(SpoolFull) as caught:
        spool.check_room(10_000 - used + 1)
    assert caught.value.exit_code == 5
    assert f"{used} of 10000 bytes used" in str(caught.value)


def test_accounting_counts_once_then_adds_what_this_process_wrote(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 10_000)
    recording = spool.create("r1", META)
    recording.write_segment(0, b"x" * 1000, statement())
    spool.account(10_000)  # before the first check nothing is counted yet: ignored
    on_disk = spool.used_bytes()
    spool.check_room(10_000 - on_disk)  # the first check counts the disk
    recording.write_segment(1, b"y" * 2000, statement())
    spool.account(2500)  # the recorder counts an envelope plus its statement
    spool.check_room(10_000 - on_disk - 2500)
    with pytest.raises(SpoolFull):
        spool.check_room(10_000 - on_disk - 2500 + 1)
    # A new process counts the disk afresh (the estimate never under-counts by much).
    again = Spool(tmp_path / "spool", 10_000)
    again.check_room(10_000 - again.used_bytes())
    assert again.used_bytes() > on_disk + 2000


def test_check_room_refuses_when_the_disk_is_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "spool", 10**9)
    spool.check_room(10**6)
    real = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: real._replace(free=5000))
    spool.check_room(5000)
    with pytest.raises(SpoolFull, match="5000 free on disk"):
        spool.check_room(5001)


# --------------------------------------------------------------------------- crash, reopen, status


def test_a_new_spool_finds_what_a_crashed_recorder_wrote(
    home: DeviceHome, consent: ConsentRecord, evidence_private: nacl.public.PrivateKey
) -> None:
    before = Spool(home.spool_dir, 10**8)
    recording = live(home, before, consent, 3, final=False)
    crash(recording)
    written = {i: recording.spooled.segment(i) for i in range(3)}

    after = Spool(home.spool_dir, 10**8)
    (found,) = list(after.recordings())
    assert found.id == str(recording.id)
    assert found.meta()["state"] == "recording"
    assert found.segments() == [0, 1, 2] and found.unsent() == [0, 1, 2]
    assert not found.opened and not found.has_final()
    assert {i: found.segment(i) for i in range(3)} == written
    assert np.array_equal(
        np.concatenate(decrypt_segments(found, evidence_private)), np.concatenate([tone(1.0, seed=i) for i in range(3)])
    )
    assert after.used_bytes() == found.size() > 0


def test_the_live_lock_keeps_sync_away_until_the_recorder_is_gone(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 10_000)
    held = spool.create("r1", META).lock()
    assert held is not None
    (other_view,) = list(Spool(tmp_path / "spool", 10_000).recordings())
    assert other_view.lock() is None  # another open of the lock file: refused while held
    held.close()  # the recorder exits (or is killed: the kernel drops the lock)
    taken = other_view.lock()
    assert taken is not None
    taken.close()


def test_status_lists_each_recording_as_the_spool_holds_it(
    home: DeviceHome, spool: Spool, consent: ConsentRecord, tmp_path: Path
) -> None:
    done = live(home, spool, consent, 2)
    crashed = live(home, spool, consent, 3, final=False)
    crashed.spooled.mark_opened()
    crashed.spooled.mark_sent(0)
    crash(crashed)
    objection = record_objection(home, spool, consent_record("objected"))

    listed = {r.id: r for r in Spool(home.spool_dir, 10**8).recordings()}
    assert set(listed) == {str(done.id), str(crashed.id), objection.id}
    assert listed[str(done.id)].meta()["state"] == "closed" and finals(listed[str(done.id)]) == [False, True]
    assert listed[str(crashed.id)].meta()["state"] == "recording" and listed[str(crashed.id)].unsent() == [1, 2]
    assert listed[objection.id].meta()["state"] == "objected" and listed[objection.id].segments() == []

    result = CliRunner().invoke(recorder_app, ["status", "--home", str(home.root)])
    assert result.exit_code == 0, result.output
    assert "spool: 3 recordings" in result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.startswith("  ")}
    assert lines[str(done.id)].split()[1:] == ["closed", "segments", "2", "unsent", "2", "final"]
    assert lines[str(crashed.id)].split()[1:] == ["recording", "segments", "3", "unsent", "2"]
    assert lines[objection.id].split()[1:] == ["objected", "segments", "0", "unsent", "0"]


# --------------------------------------------------------------------------- removal


def test_remove_refuses_while_anything_is_unsent(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 10_000)
    recording = spool.create("r1", META)
    recording.write_segment(0, b"a", statement())
    recording.write_segment(1, b"b", statement(final=True))
    files = sorted(p.name for p in recording.folder.iterdir())
    for step in ("nothing acknowledged", "header only", "one segment"):
        with pytest.raises(RuntimeError, match="unsent evidence"):
            spool.remove(recording)
        assert set(files) <= {p.name for p in recording.folder.iterdir()}, f"{step}: evidence was deleted"
        if step == "nothing acknowledged":
            recording.mark_opened()
        else:
            recording.mark_sent(0)
    recording.mark_sent(1)
    spool.remove(recording)
    assert not recording.folder.exists()
    assert list(spool.recordings()) == [] and spool.used_bytes() == 0


def test_remove_refuses_an_objection_record_the_server_has_not_seen(home: DeviceHome, spool: Spool) -> None:
    objection = record_objection(home, spool, consent_record("objected"))
    with pytest.raises(RuntimeError):
        spool.remove(objection)
    assert objection.folder.exists()
    objection.mark_opened()
    spool.remove(objection)
    assert not objection.folder.exists()


# --------------------------------------------------------------------------- concurrent meta updates


def test_meta_updates_from_two_threads_lose_nothing(tmp_path: Path) -> None:
    """The uploader thread (incident_sent) and the capture thread (incident, state) share recording.json."""
    recording = Spool(tmp_path / "spool", 10**6).create("r1", META)
    errors: list[BaseException] = []

    def writer(key: str) -> None:
        try:
            for i in range(60):
                SpooledRecording(recording.folder).update_meta(**{key: i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(key,)) for key in ("incident_sent", "state")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    meta = json.loads((recording.folder / "recording.json").read_text())
    assert meta["incident_sent"] == 59 and meta["state"] == 59
    assert meta["header"] == META["header"]
