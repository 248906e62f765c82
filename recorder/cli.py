"""`countersign recorder ...`: the counter agent's commands."""

from __future__ import annotations

import importlib.util
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from consent.catalogue import pick
from evidence.errors import ExitCode
from evidence.text import printable
from recorder import prompt
from recorder.capture import SILENCE_PEAK, DeviceSource, FileSource, Source
from recorder.client import DeviceClient
from recorder.enroll import enroll as do_enroll
from recorder.errors import NotAllUploaded, RecorderError, ServerRefused, ServerUnreachable, UsageError
from recorder.home import DeviceHome
from recorder.keys import refresh_evidence_keys
from recorder.recording import LiveRecording, record_objection
from recorder.runner import Controls, run
from recorder.spool import Spool, SpooledRecording
from recorder.uploader import UploadThread, finish, send_pending

# The recorder's shape is the one with PortAudio's binding. A server has httpx, NumPy and soundfile
# for its own reasons, so without this check `countersign recorder` would load there and fail only
# at the microphone; it must refuse as not installed (countersign/cli.py, tests/test_install_shapes.py).
if importlib.util.find_spec("sounddevice") is None:
    raise ImportError("sounddevice is not installed", name="sounddevice")

app = typer.Typer(no_args_is_help=True, help="The counter agent: enrol a device, record with consent, upload.")

Home = Annotated[Path, typer.Option("--home", envvar="COUNTERSIGN_HOME", help="Device home directory (keys, spool).")]
SpoolMax = Annotated[
    float, typer.Option("--spool-max-mb", min=0.01, help="Spool limit in MB; recording stops cleanly when reached.")
]


def say(message: str) -> None:
    typer.echo(message, err=True)


def fail(exc: Exception, code: ExitCode = ExitCode.FAILED) -> typer.Exit:
    """Print one line and return the Exit to raise: the error's own exit_code, else `code`."""
    typer.secho(f"error: {printable(str(exc))}", fg=typer.colors.RED, err=True)  # it may quote the server
    return typer.Exit(int(getattr(exc, "exit_code", code)))


def _open_home(home: Path, spool_max_mb: float) -> tuple[DeviceHome, dict[str, Any], Spool]:
    """The enrolled device's home, its configuration and its spool (or exit NOT_ENROLLED)."""
    device_home = DeviceHome(home)
    try:
        config = device_home.config()
    except RecorderError as exc:
        raise fail(exc) from exc
    return device_home, config, Spool(device_home.spool_dir, int(spool_max_mb * 1024 * 1024))


@app.command()
def enroll(
    server: Annotated[str, typer.Option(help="Service URL, e.g. https://countersign.example or http://127.0.0.1:8000")],
    code: Annotated[str, typer.Option(help="One-time enrolment code from 'countersign admin device add'.")],
    home: Home,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            envvar="COUNTERSIGN_CA_FILE",
            help="PEM certificate of the private CA that signed the server's certificate (kept in the home).",
        ),
    ] = None,
    pin: Annotated[
        str | None,
        typer.Option(
            "--pin",
            envvar="COUNTERSIGN_SERVER_PIN",
            help="sha256:HEX of the server's certificate; enrolment is refused if it differs. "
            "Without it, the certificate seen at enrolment is pinned.",
        ),
    ] = None,
) -> None:
    """Generate this device's signing key and register it with the service."""
    try:
        config = do_enroll(server, code, home, ca_file=ca_file, pin=pin)
    except RecorderError as exc:
        raise fail(exc) from exc
    typer.echo(f"enrolled device {config['device_id']} at site {config['site']}; home {home}")


def _make_source(input_file: Path | None, input_device: str | None, rate: int, channels: int, realtime: bool) -> Source:
    if input_file is not None:
        return FileSource(input_file, realtime=realtime)
    device: str | int | None = int(input_device) if input_device and input_device.isdigit() else input_device
    source = DeviceSource(sample_rate=rate, channels=channels, device=device)
    source.check()  # a missing or busy device is one line and exit 2, before the notice is shown
    # Capture runs (and is dropped) before the notice: a stream that will not open or deliver
    # audio fails here, so no consent record and no recording exist for it.
    source.start()
    return source


def _close_source(source: Source | None) -> None:
    if isinstance(source, DeviceSource):
        source.close()


def _watch_keys(controls: Controls, source: Source) -> None:
    """Line commands while recording: Enter stops, 'i [category]' flags an incident."""
    for line in sys.stdin:
        command = line.strip()
        if command == "":
            controls.request_stop("stopped by staff")
            source.stop()
            return
        if command.split()[0].lower() in ("i", "incident"):
            parts = command.split(maxsplit=1)
            controls.incident = parts[1] if len(parts) > 1 else "harassment"
            say(f"incident will be flagged: {controls.incident}")


@app.command()
def record(
    home: Home,
    input_file: Annotated[
        Path | None, typer.Option("--input", help="Record from a WAV/FLAC file instead of a device.")
    ] = None,
    input_device: Annotated[str | None, typer.Option(help="sounddevice input device name or index.")] = None,
    output_device: Annotated[str | None, typer.Option(help="Device that speaks the notice.")] = None,
    duration: Annotated[float | None, typer.Option(min=0.1, help="Stop after this many seconds of audio.")] = None,
    consent: Annotated[
        str | None, typer.Option(help="'given' or 'objected' when the notice was given on another channel (IVR).")
    ] = None,
    language: Annotated[str, typer.Option(help="Notice language: ja or en.")] = "ja",
    staff: Annotated[
        str, typer.Option(envvar="COUNTERSIGN_STAFF_CODE", help="Staff code of who gave the notice.")
    ] = "counter",
    incident: Annotated[str | None, typer.Option(help="Flag as an incident of this category from the start.")] = None,
    segment_seconds: Annotated[float, typer.Option(min=0.5, max=60)] = 5.0,
    sample_rate: Annotated[int, typer.Option(help="Device capture rate (files keep their own).")] = 16000,
    channels: Annotated[int, typer.Option(min=1, max=2)] = 1,
    realtime: Annotated[bool, typer.Option(help="Pace --input like a live line.")] = False,
    upload_wait: Annotated[float, typer.Option(help="Seconds to wait for uploads after stopping.")] = 30.0,
    spool_max_mb: SpoolMax = 1024.0,
) -> None:
    """Show the consent notice, then record, encrypt, sign, spool and upload."""
    if consent not in (None, "given", "objected"):
        raise fail(UsageError("--consent must be 'given' or 'objected'"))
    device_home = DeviceHome(home)
    client: DeviceClient | None = None
    source: Source | None = None
    try:
        config = device_home.config()
        client = DeviceClient.for_home(device_home, config)  # over https: the CA and the pinned certificate
        # The server's current keys (a rotation reaches the device here); fail closed before showing anything.
        refresh_evidence_keys(device_home, client, say)
        notice = pick(device_home.notices(), language)
        source = _make_source(input_file, input_device, sample_rate, channels, realtime)
    except RecorderError as exc:
        if client is not None:
            client.close()
        raise fail(exc) from exc
    except (LookupError, ValueError) as exc:  # no notice in that language; a file that is not audio
        if client is not None:
            client.close()
        raise fail(exc, ExitCode.USAGE) from exc

    try:
        if consent is None:
            record_ = prompt.present(
                notice,
                staff,
                say,
                lambda q: typer.prompt(q, default="", show_default=False),
                # Recording a file (a phone line): the customer is not at this PC's speaker, so nothing is played.
                prompt.notice_audio(home, notice) if input_file is None else None,
                prompt.device_arg(output_device),
            )
        else:
            record_ = prompt.scripted(notice, staff, consent)
        heard_nothing = isinstance(source, DeviceSource) and source.peak <= SILENCE_PEAK
        if record_.outcome == "given" and consent is None and heard_nothing:
            # Not a refusal here: a terminal user may record a quiet line on purpose; the kiosk refuses.
            say(
                "warning: the microphone heard only silence while the notice was shown; check it is not muted"
                " / 告知中のマイク入力が無音でした。ミュートを確認してください"
            )
    except (KeyboardInterrupt, typer.Abort) as exc:  # staff cancelled at the notice: nothing was decided
        _close_source(source)
        client.close()
        say("cancelled: no consent was recorded and nothing was recorded / 中止しました。記録はありません")
        raise typer.Exit(ExitCode.FAILED) from exc
    spool = Spool(device_home.spool_dir, int(spool_max_mb * 1024 * 1024))
    try:
        if record_.outcome == "objected":
            _close_source(source)
            spooled = record_objection(device_home, spool, record_)
            say("customer objected: nothing is recorded; the objection is logged / 拒否を記録しました (録音なし)")
            _upload_now(client, spool, spooled)
            return
        try:
            live = LiveRecording(device_home, spool, record_, source.sample_rate, source.channels, segment_seconds)
        except RecorderError as exc:
            _close_source(source)
            raise fail(exc) from exc
        uploader = UploadThread(client, live.spooled, say)
        uploader.start()
        controls = Controls(incident=incident)

        def on_signal(_signum: int, _frame: object) -> None:
            controls.request_stop("interrupted by signal")
            source.stop()

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, on_signal)
        if sys.stdin.isatty() or (duration is None and input_file is None):
            threading.Thread(target=_watch_keys, args=(controls, source), daemon=True).start()
        say(
            f"recording {live.id} — press Enter to stop, 'i <category>' + Enter to flag an incident\n"
            "録音中 — Enter で停止、'i <区分>' + Enter でインシデント登録"
        )
        try:
            summary = run(source, live, uploader, controls, duration, say)
        except RecorderError as exc:  # e.g. the input device went away: its own line and code
            uploader.close(0)
            raise fail(exc) from exc
        except Exception as exc:
            uploader.close(0)
            raise fail(RecorderError(f"capture failed: {exc}")) from exc
        all_sent = uploader.close(upload_wait)
        say(f"stopped ({summary.stopped_by}): {summary.segments} segments, {summary.seconds:.1f} s")
        if all_sent:
            finish(client, spool, live.spooled)
            typer.echo(f"{live.id} uploaded")
        else:
            typer.echo(
                f"{live.id} spooled; {len(live.spooled.unsent())} segments wait: run 'countersign recorder sync'"
            )
        if summary.spool_full:
            raise typer.Exit(ExitCode.SPOOL_FULL)  # the runner has printed the ALARM
        if uploader.error is not None:
            raise typer.Exit(ExitCode.SERVER_REFUSED)  # the uploader has printed the refusal
        if not all_sent:
            raise fail(NotAllUploaded(f"{len(live.spooled.unsent())} segments of {live.id} wait"))
    finally:
        client.close()


def _upload_now(client: DeviceClient, spool: Spool, spooled: SpooledRecording) -> None:
    try:
        send_pending(client, spooled)
        finish(client, spool, spooled)
        typer.echo(f"{spooled.id} uploaded")
    except ServerUnreachable as exc:
        say(f"{exc}; kept in the spool: run 'countersign recorder sync'")
        raise typer.Exit(ExitCode.SERVER_UNREACHABLE) from exc
    except ServerRefused as exc:
        say("the objection record stays in the spool")
        raise fail(exc) from exc


@app.command()
def sync(home: Home, spool_max_mb: SpoolMax = 1024.0) -> None:
    """Upload whatever is still in the spool (after a crash or an outage)."""
    device_home, config, spool = _open_home(home, spool_max_mb)
    try:
        client = DeviceClient.for_home(device_home, config)
    except RecorderError as exc:
        raise fail(exc) from exc
    errors = 0
    try:
        for spooled in list(spool.recordings()):
            lock = spooled.lock()
            if lock is None:
                typer.echo(f"{spooled.id}: being recorded by a running recorder; skipped")
                continue
            try:
                sent = send_pending(client, spooled)
                outcome = finish(client, spool, spooled)
                typer.echo(f"{spooled.id}: {sent} segments sent; {outcome}")
            except ServerUnreachable as exc:
                raise fail(exc) from exc
            except ServerRefused as exc:
                errors += 1
                typer.secho(f"{spooled.id}: refused, kept in the spool: {exc}", fg=typer.colors.RED, err=True)
            finally:
                lock.close()
    finally:
        client.close()
    if errors:
        raise typer.Exit(ExitCode.SERVER_REFUSED)


@app.command()
def status(home: Home, spool_max_mb: SpoolMax = 1024.0) -> None:
    """Show this device and what waits in its spool."""
    _, config, spool = _open_home(home, spool_max_mb)
    typer.echo(f"device {config['device_id']} site {config['site']} server {config['server']}")
    if config.get("server_pin"):
        typer.echo(f"server certificate pinned: {config['server_pin']}")
    recordings = list(spool.recordings())
    used = spool.used_bytes()
    typer.echo(f"spool: {len(recordings)} recordings, {used / 1e6:.1f} MB of {spool.max_bytes / 1e6:.0f} MB")
    for spooled in recordings:
        state = spooled.meta().get("state")
        typer.echo(
            f"  {spooled.id}  {state:<9} segments {len(spooled.segments())}  unsent {len(spooled.unsent())}"
            f"{'  final' if spooled.has_final() else ''}"
        )


@app.command()
def serve(
    home: Home,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port of the kiosk page.")] = 8765,
    host: Annotated[
        str, typer.Option(help="Address to serve on; anything but loopback requires a pairing secret.")
    ] = "127.0.0.1",
    pairing_secret_file: Annotated[
        Path | None,
        typer.Option(help="File holding the secret a LAN screen presents once (default: a new one, printed)."),
    ] = None,
    input_device: Annotated[str | None, typer.Option(help="sounddevice input device name or index.")] = None,
    output_device: Annotated[str | None, typer.Option(help="Device that speaks the notice.")] = None,
    staff: Annotated[
        str, typer.Option(envvar="COUNTERSIGN_STAFF_CODE", help="Staff code recorded with each consent.")
    ] = "counter",
    segment_seconds: Annotated[float, typer.Option(min=0.5, max=60)] = 5.0,
    sample_rate: Annotated[int, typer.Option(help="Device capture rate.")] = 16000,
    channels: Annotated[int, typer.Option(min=1, max=2)] = 1,
    spool_max_mb: SpoolMax = 1024.0,
) -> None:
    """Run the counter agent: the kiosk page, readiness checks, recording and automatic upload."""
    from recorder.kiosk.service import serve as run_kiosk

    try:
        run_kiosk(
            home,
            port=port,
            host=host,
            pairing_secret_file=pairing_secret_file,
            input_device=input_device,
            output_device=output_device,
            staff=staff,
            segment_seconds=segment_seconds,
            sample_rate=sample_rate,
            channels=channels,
            spool_max_bytes=int(spool_max_mb * 1024 * 1024),
            say=say,
        )
    except RecorderError as exc:
        raise fail(exc) from exc
