"""Recorder CPU cost: CPU seconds per second of recorded audio, and how many live streams one core can carry.

Runs the recorder's own capture loop (recorder.runner.run) on a WAV file read by FileSource at full
speed (not paced), with a real LiveRecording, DeviceHome and Spool in a temporary folder: segmenting,
FLAC encoding, XChaCha20-Poly1305 encryption, Ed25519 signing and spooling with fsync (file and
folder), exactly as `countersign recorder record --input FILE` does, but with the uploader disabled.

The per-stage breakdown comes from the same run: the stage functions are wrapped in this process
(process CPU time and wall time around every call); nothing in the application is changed.

    .venv/bin/python bench/recorder_cpu.py                  # 10 minutes of speech-like audio
    .venv/bin/python bench/recorder_cpu.py --minutes 60 --backlog-segments 10000
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest import mock

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import nacl.public  # noqa: E402
import nacl.signing  # noqa: E402

import evidence.audio  # noqa: E402
import evidence.chain  # noqa: E402
import evidence.envelope  # noqa: E402
import recorder.recording  # noqa: E402
import recorder.runner  # noqa: E402
import recorder.segmenter  # noqa: E402
from bench._audio import speech_like, write_wav  # noqa: E402
from bench._meta import load_average, revision  # noqa: E402
from consent.catalogue import builtin_notices, pick  # noqa: E402
from recorder.capture import FileSource  # noqa: E402
from recorder.home import DeviceHome  # noqa: E402
from recorder.prompt import scripted  # noqa: E402
from recorder.recording import LiveRecording  # noqa: E402
from recorder.spool import Spool, SpooledRecording  # noqa: E402

RATE = 16000


class Stage:
    """CPU (time.process_time) and wall time spent inside one function or iterator."""

    def __init__(self, name: str) -> None:
        self.name, self.cpu, self.wall, self.calls = name, 0.0, 0.0, 0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu += time.process_time() - cpu
                self.wall += time.perf_counter() - wall
                self.calls += 1

        return timed

    def wrap_iter(self, fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        """Time every next() of the iterators fn returns (a generator's work happens there)."""

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            inner = iter(fn(*args, **kwargs))
            while True:
                cpu, wall = time.process_time(), time.perf_counter()
                try:
                    item = next(inner)
                except StopIteration:
                    return
                finally:
                    self.cpu += time.process_time() - cpu
                    self.wall += time.perf_counter() - wall
                self.calls += 1
                yield item

        return timed


def make_home(root: Path) -> DeviceHome:
    """An enrolled-looking device home: identity, signing key, token, one evidence key, builtin notices."""
    home = DeviceHome(root)
    signing = nacl.signing.SigningKey.generate()
    evidence_key = nacl.public.PrivateKey.generate().public_key
    config = {
        "server": "http://127.0.0.1:9",  # never contacted: no uploader
        "device_id": str(uuid.uuid4()),
        "site": "bench",
        "service_public_key": bytes(nacl.signing.SigningKey.generate().verify_key).hex(),
    }
    notices = [n.to_dict() for n in builtin_notices()]
    home.save(config, bytes(signing), "csd_bench-token", {"bench-key": bytes(evidence_key).hex()}, notices)
    return home


def make_backlog(spool: Spool, segments: int) -> None:
    """A closed recording of `segments` unsent (small) segments: what an outage leaves in the spool."""
    folder = spool.create(str(uuid.uuid4()), {"state": "closed", "backlog": True}).folder
    for i in range(segments):
        (folder / f"{i:06d}.seg").write_bytes(b"\0" * 64)
        (folder / f"{i:06d}.json").write_text(json.dumps({"final": i == segments - 1}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of audio to record (default 10)")
    parser.add_argument("--segment-seconds", type=float, default=5.0, help="audio per segment (default 5)")
    parser.add_argument("--audio", choices=["auto", "espeak", "noise"], default="auto", help="test audio source")
    parser.add_argument("--input", type=Path, default=None, help="record this WAV file instead of generated audio")
    parser.add_argument("--spool-max-mb", type=int, default=1024, help="spool limit, as the CLI's (default 1024)")
    parser.add_argument(
        "--backlog-segments",
        type=int,
        default=0,
        help="unsent segments already in the spool (an outage); each room check scans them (default 0)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary folder (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the device home, spool and WAV")
    args = parser.parse_args()
    started = time.perf_counter()

    print("Countersign recorder CPU benchmark: CPU s per audio s for capture -> segment -> FLAC -> encrypt -> sign ->")
    print("  spool (fsync), one recording, uploader disabled; stage breakdown measured in the same run")
    print(f"  code: {revision()}; load average now {load_average()}")

    work = Path(tempfile.mkdtemp(prefix="countersign-bench-recorder-", dir=args.workdir))
    try:
        if args.input is None:
            wav = work / "input.wav"
            pcm, what = speech_like(args.minutes * 60, RATE, kind=args.audio)
            write_wav(wav, pcm, RATE)
            del pcm
        else:
            wav, what = args.input, str(args.input)
        home = make_home(work / "home")
        spool = Spool(home.spool_dir, args.spool_max_mb * 1024 * 1024)
        if args.backlog_segments:
            make_backlog(spool, args.backlog_segments)
        consent = scripted(pick(home.notices(), "ja"), "bench", "given")
        source = FileSource(wav, realtime=False)
        print(
            f"  input: {what}, {source.sample_rate} Hz x {source.channels} ch WAV via FileSource (not paced); "
            f"{args.segment_seconds:g} s segments; spool {spool.root}"
            + (f" holding a backlog of {args.backlog_segments} segments" if args.backlog_segments else "")
        )

        capture = Stage("capture (FileSource read)")
        segmenting = Stage("segmenting")
        encode = Stage("FLAC encode")
        encrypt = Stage("encrypt (XChaCha20-Poly1305)")
        sign = Stage("sign (Ed25519)")
        spool_write = Stage("spool write + fsync")
        room = Stage("spool room check")
        add = Stage("LiveRecording.add")
        setup = Stage("recording setup")
        sizes: list[int] = []

        def write_segment(self: SpooledRecording, index: int, envelope: bytes, statement: dict[str, Any]) -> None:
            sizes.append(len(envelope))
            original_write(self, index, envelope, statement)

        original_write = SpooledRecording.write_segment
        with ExitStack() as patches:
            patches.enter_context(mock.patch.object(evidence.audio, "encode", encode.wrap(evidence.audio.encode)))
            patches.enter_context(
                mock.patch.object(recorder.recording, "seal_segment", encrypt.wrap(evidence.envelope.seal_segment))
            )
            patches.enter_context(
                mock.patch.object(recorder.recording, "sign_statement", sign.wrap(evidence.chain.sign_statement))
            )
            patches.enter_context(mock.patch.object(SpooledRecording, "write_segment", spool_write.wrap(write_segment)))
            patches.enter_context(mock.patch.object(Spool, "check_room", room.wrap(Spool.check_room)))
            patches.enter_context(mock.patch.object(LiveRecording, "add", add.wrap(LiveRecording.add)))
            patches.enter_context(
                mock.patch.object(recorder.runner, "segments", segmenting.wrap_iter(recorder.segmenter.segments))
            )
            source.blocks = capture.wrap_iter(source.blocks)  # type: ignore[method-assign]

            cpu0, wall0 = time.process_time(), time.perf_counter()
            live = setup.wrap(LiveRecording)(
                home, spool, consent, source.sample_rate, source.channels, args.segment_seconds
            )
            summary = recorder.runner.run(source, live, None, recorder.runner.Controls(), None, lambda _line: None)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0

        audio_s = summary.seconds
        segs = summary.segments
        per_audio = cpu / audio_s
        print(
            f"  recorded {audio_s:.1f} s of audio in {segs} segments "
            f"(mean envelope {sum(sizes) / max(1, len(sizes)) / 1000:.1f} KB), recording {summary.recording_id[:8]}"
        )
        missed = [st.name for st in (encode, encrypt, sign, spool_write, add) if st.calls != segs]
        if missed:
            print(f"  WARNING: {', '.join(missed)} not seen once per segment: the breakdown is incomplete")
        print()

        # segmenting's iterator includes the capture's; add() includes encode, encrypt, sign and spool write.
        inner = encode.cpu + encrypt.cpu + sign.cpu + spool_write.cpu
        inner_wall = encode.wall + encrypt.wall + sign.wall + spool_write.wall
        rows: list[tuple[str, float, float]] = [
            (capture.name, capture.cpu, capture.wall),
            (segmenting.name, segmenting.cpu - capture.cpu, segmenting.wall - capture.wall),
            (encode.name, encode.cpu, encode.wall),
            (encrypt.name, encrypt.cpu, encrypt.wall),
            (sign.name, sign.cpu, sign.wall),
            (spool_write.name, spool_write.cpu, spool_write.wall),
            (room.name, room.cpu, room.wall),
            ("hashes, statement, close", add.cpu - inner, add.wall - inner_wall),
            (setup.name, setup.cpu, setup.wall),
        ]
        accounted = sum(r[1] for r in rows)
        rows.append(("loop and the rest", cpu - accounted, wall - sum(r[2] for r in rows)))
        rows.append(("total", cpu, wall))
        print(f"{'stage':<30} {'CPU s':>8} {'CPU ms/seg':>11} {'CPU s/audio s':>14} {'% CPU':>6} {'wall s':>8}")
        for name, c, w in rows:
            print(f"{name:<30} {c:8.3f} {c * 1000 / segs:11.2f} {c / audio_s:14.5f} {100 * c / cpu:6.1f} {w:8.3f}")
        print()
        print(f"CPU s per audio s:   {per_audio:.5f}")
        print(f"wall s per audio s:  {wall / audio_s:.5f}  (fsync waits included; {audio_s / wall:.0f}x real time)")
        print(f"streams per core:    {1 / per_audio:.0f}  (= 1 / CPU s per audio s; excludes upload, UI and the OS)")
    finally:
        if args.keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nrun time {time.perf_counter() - started:.1f} s; load average {load_average()}")


if __name__ == "__main__":
    main()
