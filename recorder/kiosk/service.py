"""`countersign recorder serve`: wire the agent to its web server and run until SIGTERM."""

from __future__ import annotations

import secrets
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from recorder import prompt
from recorder.errors import UsageError
from recorder.kiosk.agent import Agent, AgentConfig
from recorder.kiosk.web import KioskServer, is_loopback


def pairing_secret(host: str, path: Path | None) -> str | None:
    if path is not None:
        try:
            secret = path.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the pairing secret file: {exc}") from exc
        if len(secret) < 16:
            raise UsageError(f"{path}: a pairing secret needs at least 16 characters")
        return secret
    return None if is_loopback(host) else secrets.token_urlsafe(24)


def serve(
    home: Path,
    *,
    port: int,
    host: str,
    pairing_secret_file: Path | None,
    input_device: str | None,
    output_device: str | None,
    staff: str,
    segment_seconds: float,
    sample_rate: int,
    channels: int,
    spool_max_bytes: int,
    say: Callable[[str], None],
) -> None:
    config = AgentConfig(
        home=home,
        input_device=prompt.device_arg(input_device),
        output_device=prompt.device_arg(output_device),
        sample_rate=sample_rate,
        channels=channels,
        segment_seconds=segment_seconds,
        spool_max_bytes=spool_max_bytes,
        staff_code=staff,
    )
    agent = Agent(config, report=say)
    secret = pairing_secret(host, pairing_secret_file)
    try:
        server = KioskServer(agent, host, port, secret, one_time=pairing_secret_file is None, announce=say)
    except OSError as exc:
        agent.client.close()
        raise UsageError(f"cannot serve on {host}:{port}: {exc}") from exc
    named = f"[{host}]" if ":" in host else host
    url = f"http://{named}:{server.port}/"
    agent.start()
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True)
    thread.start()
    say(f"kiosk for device {agent.device_config['device_id']} at {url}")
    if secret is not None and pairing_secret_file is None:
        say(f"pair a screen by opening {url}pair?code={secret} (the code works once)")
    elif secret is not None:
        say(f"pair a screen by opening {url}pair?code=<the secret in {pairing_secret_file}>")
    stopping.wait()
    say("stopping: closing any recording cleanly")
    agent.shutdown()
    server.shutdown()
    server.server_close()
