"""`countersign server deliver`: drain the help-alert outbox from the data directory (cron, tests, a spare worker)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from api.alerts.config import AlertSettings
from api.alerts.worker import Worker
from api.core.keys import KeyCustodian, KeyFileError
from api.core.settings import SettingsError, load_settings
from api.errors import NotConfigured, fail


def deliver(
    data: Annotated[Path, typer.Option("--data", envvar="COUNTERSIGN_DATA_DIR", help="Service data directory.")],
    once: Annotated[
        bool, typer.Option("--once", help="Send what is due now, then exit (else: run until stopped).")
    ] = False,
) -> None:
    """Send due help-alert notifications and escalations, as each service process's worker does.

    Safe beside running services: every delivery is claimed by one worker at a time.
    """
    try:
        settings = load_settings(data_dir=data)
        keys = KeyCustodian.load(settings.data_dir, settings.passphrase())
    except (SettingsError, KeyFileError) as exc:
        raise fail(NotConfigured(str(exc))) from exc
    config = AlertSettings()
    worker = Worker(settings, keys.signing_key, config)
    try:
        if once:
            typer.echo(f"{worker.drain()} notification(s) and escalation(s) handled")
            return
        while True:
            if not worker.run_once():
                time.sleep(config.alerts_poll_seconds)
    finally:
        worker.stop()
