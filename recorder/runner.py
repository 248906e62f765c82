"""The capture loop: source -> segmenter -> encrypt/sign/spool -> uploader, until stopped."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from evidence.audio import PCM
from recorder.capture import Source
from recorder.recording import LiveRecording
from recorder.segmenter import segments
from recorder.uploader import UploadThread


@dataclass
class RunSummary:
    recording_id: str
    segments: int
    seconds: float
    stopped_by: str
    spool_full: bool = False
    problems: dict[str, int] = field(default_factory=dict)


@dataclass
class Controls:
    """What the outside world can do to a running recording (keys, signals, timers)."""

    stop: threading.Event = field(default_factory=threading.Event)
    reason: str = "end of input"
    incident: str | None = None

    def request_stop(self, reason: str) -> None:
        self.reason = reason
        self.stop.set()


def run(
    source: Source,
    live: LiveRecording,
    uploader: UploadThread | None,
    controls: Controls,
    duration: float | None,
    report: Callable[[str], None],
) -> RunSummary:
    max_frames = int(duration * source.sample_rate) if duration else None
    captured = 0
    spool_full = False

    def limited_blocks() -> Iterator[PCM]:
        nonlocal captured
        for block in source.blocks():
            if max_frames is not None and captured + len(block) >= max_frames:
                yield block[: max_frames - captured]
                captured = max_frames
                controls.request_stop("duration reached")
                source.stop()
                return
            captured += len(block)
            yield block
            if controls.stop.is_set():
                source.stop()
                return

    for pcm, final in segments(limited_blocks(), live.frames_per_segment, source.channels):
        if controls.incident:
            live.flag_incident(controls.incident)
            report(f"incident flagged: {controls.incident}")
            controls.incident = None
        if not final and not live.room_for_next():
            # Close cleanly with this segment as the last one; never delete spooled evidence.
            report("ALARM: spool nearly full; stopping the recording cleanly. Run 'countersign recorder sync'.")
            spool_full = True
            controls.request_stop("spool full")
            source.stop()
            final = True
        live.add(pcm, final)
        if uploader is not None:
            uploader.notify()
        report(f"segment {live.index - 1} spooled ({len(pcm) / source.sample_rate:.1f} s){' [final]' if final else ''}")
        if final:
            break
    if controls.incident:
        live.flag_incident(controls.incident)
    problems = source.problems()
    if problems:
        report(f"WARNING: audio input problems: {problems}")
    return RunSummary(str(live.id), live.index, captured / source.sample_rate, controls.reason, spool_full, problems)
