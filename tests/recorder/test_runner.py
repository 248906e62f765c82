"""recorder.runner in-process: a file source through segmenter, encryption, spool (and uploader)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nacl.public
import numpy as np
import pytest

from consent.records import ConsentRecord
from evidence.audio import PCM
from recorder.capture import FileSource
from recorder.home import DeviceHome
from recorder.recording import LiveRecording
from recorder.runner import Controls, RunSummary, run
from recorder.spool import Spool
from recorder.uploader import UploadThread, finish
from tests.recorder.conftest import Service
from tests.recorder.support import RATE, decrypt_segments, finals, write_wav


@dataclass
class Recorded:
    summary: RunSummary
    live: LiveRecording
    reports: list[str]
    segments: list[np.ndarray]


def record(
    home: DeviceHome,
    spool: Spool,
    consent: ConsentRecord,
    private: nacl.public.PrivateKey,
    source: FileSource,
    controls: Controls | None = None,
    duration: float | None = None,
    segment_seconds: float = 1.0,
) -> Recorded:
    live = LiveRecording(home, spool, consent, source.sample_rate, source.channels, segment_seconds)
    reports: list[str] = []
    summary = run(source, live, None, controls or Controls(), duration, reports.append)
    return Recorded(summary, live, reports, decrypt_segments(live.spooled, private))


class StaffSource(FileSource):
    """A file source with someone at the counter: `act` (a key press) comes while block `after` is captured."""

    def __init__(self, path: Path, after: int, act: object, problems: dict[str, int] | None = None) -> None:
        super().__init__(path)
        self.after, self.act, self._problems = after, act, problems or {}
        self.blocks_given = 0
        self.stopped = False

    def blocks(self) -> Iterator[PCM]:
        for block in super().blocks():
            self.blocks_given += 1
            if self.blocks_given == self.after:
                self.act()  # type: ignore[operator]
            yield block

    def stop(self) -> None:
        self.stopped = True
        super().stop()

    def problems(self) -> dict[str, int]:
        return dict(self._problems)


@pytest.mark.parametrize(("seconds", "lengths"), [(3.5, [16000, 16000, 16000, 8000]), (3.0, [16000] * 3)])
def test_a_file_is_cut_into_segments_with_the_last_final(
    home: DeviceHome,
    spool: Spool,
    consent: ConsentRecord,
    evidence_private: nacl.public.PrivateKey,
    tmp_path: Path,
    seconds: float,
    lengths: list[int],
) -> None:
    pcm = write_wav(tmp_path / "in.wav", seconds)
    done = record(home, spool, consent, evidence_private, FileSource(tmp_path / "in.wav"))
    assert done.summary.segments == len(lengths) == done.live.index
    assert done.summary.seconds == seconds
    assert done.summary.stopped_by == "end of input" and not done.summary.spool_full
    assert done.summary.recording_id == str(done.live.id) == done.live.spooled.id
    assert [len(s) for s in done.segments] == lengths
    assert finals(done.live.spooled) == [False] * (len(lengths) - 1) + [True]
    assert np.array_equal(np.concatenate(done.segments), pcm)  # every frame, in order, nothing twice
    assert done.live.closed and done.live.spooled.meta()["state"] == "closed"
    assert [r.endswith("[final]") for r in done.reports if r.startswith("segment ")] == finals(done.live.spooled)


def test_stereo_and_another_rate_are_kept(
    home: DeviceHome, spool: Spool, consent: ConsentRecord, evidence_private: nacl.public.PrivateKey, tmp_path: Path
) -> None:
    pcm = write_wav(tmp_path / "in.wav", 2.5, rate=8000, channels=2)
    done = record(home, spool, consent, evidence_private, FileSource(tmp_path / "in.wav"))
    header = done.live.spooled.meta()["header"]
    assert header["sample_rate"] == 8000 and header["channels"] == 2
    assert [s.shape for s in done.segments] == [(8000, 2), (8000, 2), (4000, 2)]
    assert np.array_equal(np.concatenate(done.segments), pcm)


def test_duration_limit_stops_at_the_exact_frame(
    home: DeviceHome, spool: Spool, consent: ConsentRecord, evidence_private: nacl.public.PrivateKey, tmp_path: Path
) -> None:
    pcm = write_wav(tmp_path / "in.wav", 5.0)
    source = StaffSource(tmp_path / "in.wav", after=-1, act=None)
    done = record(home, spool, consent, evidence_private, source, duration=2.05)
    assert done.summary.stopped_by == "duration reached" and source.stopped
    assert done.summary.seconds == pytest.approx(2.05)
    assert [len(s) for s in done.segments] == [16000, 16000, 800]
    assert finals(done.live.spooled) == [False, False, True]
    assert np.array_equal(np.concatenate(done.segments), pcm[:32800])


def test_staff_stop_ends_with_a_final_segment(
    home: DeviceHome, spool: Spool, consent: ConsentRecord, evidence_private: nacl.public.PrivateKey, tmp_path: Path
) -> None:
    pcm = write_wav(tmp_path / "in.wav", 10.0)
    controls = Controls()
    source = StaffSource(tmp_path / "in.wav", after=25, act=lambda: controls.request_stop("stopped by staff"))
    done = record(home, spool, consent, evidence_private, source, controls)
    assert done.summary.stopped_by == "stopped by staff" and source.stopped
    assert source.blocks_given == 25  # nothing read after the stop
    assert done.summary.seconds == pytest.approx(2.5)
    assert finals(done.live.spooled) == [False, False, True]
    assert np.array_equal(np.concatenate(done.segments), pcm[:40000])


@pytest.mark.parametrize("after_blocks", [0, 15, 30])
def test_an_incident_flag_reaches_the_spooled_recording(
    home: DeviceHome,
    spool: Spool,
    consent: ConsentRecord,
    evidence_private: nacl.public.PrivateKey,
    tmp_path: Path,
    after_blocks: int,
) -> None:
    """From the start (--incident), mid-recording, or on the last block ('i' + Enter)."""
    write_wav(tmp_path / "in.wav", 3.0)
    controls = Controls(incident="harassment" if after_blocks == 0 else None)

    def flag() -> None:
        controls.incident = "threat"

    source = StaffSource(tmp_path / "in.wav", after=after_blocks, act=flag)
    done = record(home, spool, consent, evidence_private, source, controls)
    expected = "harassment" if after_blocks == 0 else "threat"
    assert done.live.spooled.meta()["incident"] == expected
    assert controls.incident is None, "flagged once, then cleared"
    assert f"incident flagged: {expected}" in done.reports
    assert done.summary.segments == 3 and finals(done.live.spooled)[-1]


def test_a_full_spool_stops_cleanly_with_a_final_segment_inside_the_limit(
    home: DeviceHome, consent: ConsentRecord, evidence_private: nacl.public.PrivateKey, tmp_path: Path
) -> None:
    pcm = write_wav(tmp_path / "in.wav", 20.0)
    limit = 200_000
    spool = Spool(home.spool_dir, limit)
    source = StaffSource(tmp_path / "in.wav", after=-1, act=None)
    done = record(home, spool, consent, evidence_private, source)
    assert done.summary.spool_full and done.summary.stopped_by == "spool full" and source.stopped
    kept = done.summary.segments
    assert 1 <= kept < 20
    assert finals(done.live.spooled) == [False] * (kept - 1) + [True]
    assert done.live.spooled.segments() == list(range(kept)), "nothing spooled was deleted"
    assert np.array_equal(np.concatenate(done.segments), pcm[: kept * RATE])  # whole segments, no gap
    assert Spool(home.spool_dir, limit).used_bytes() <= limit, "the final segment must still fit"
    assert any(r.startswith("ALARM: spool nearly full") for r in done.reports)
    assert done.live.spooled.meta()["state"] == "closed"


def test_input_problems_are_reported(
    home: DeviceHome, spool: Spool, consent: ConsentRecord, evidence_private: nacl.public.PrivateKey, tmp_path: Path
) -> None:
    write_wav(tmp_path / "in.wav", 1.0)
    source = StaffSource(tmp_path / "in.wav", after=-1, act=None, problems={"input_overflows": 2})
    done = record(home, spool, consent, evidence_private, source)
    assert done.summary.problems == {"input_overflows": 2}
    assert "WARNING: audio input problems: {'input_overflows': 2}" in done.reports


def test_record_and_upload_in_process_round_trip(service: Service, consent: ConsentRecord, tmp_path: Path) -> None:
    pcm = write_wav(tmp_path / "in.wav", 4.5)
    source = FileSource(tmp_path / "in.wav")
    spool = service.spool()
    live = LiveRecording(service.home, spool, consent, source.sample_rate, source.channels, 1.0)
    client = service.device_client()
    uploader = UploadThread(client, live.spooled, lambda _message: None)
    try:
        uploader.start()
        summary = run(source, live, uploader, Controls(incident="harassment"), None, lambda _message: None)
        assert uploader.close(20)
        assert finish(client, spool, live.spooled) == "complete"
    finally:
        uploader.close(5)
        client.close()
    assert summary.segments == 5
    shown = service.evidence(str(live.id))
    assert shown["status"] == "complete" and shown["segment_count"] == 5
    assert shown["incident_category"] == "harassment"
    assert [s["final"] for s in shown["segments"]] == [False] * 4 + [True]
    assert np.array_equal(service.audio(str(live.id)), pcm)
    assert not live.spooled.folder.exists()
