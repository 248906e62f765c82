"""Enrolment: make the device key here, register its public half, keep the rest at 0600."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nacl.signing

from recorder.client import DeviceClient
from recorder.errors import RecorderError
from recorder.home import DeviceHome


def enroll(server: str, code: str, home_dir: Path) -> dict[str, Any]:
    home = DeviceHome(home_dir)
    if home.is_enrolled():
        raise RecorderError(f"{home_dir} already holds an enrolled device; use another --home")
    signing = nacl.signing.SigningKey.generate()  # the private half never leaves this machine
    client = DeviceClient(server)
    try:
        reply = client.enrol(code.strip().upper(), bytes(signing.verify_key).hex())
    finally:
        client.close()
    config = {
        "server": server.rstrip("/"),
        "device_id": reply["device_id"],
        "site": reply["site"],
        "service_public_key": reply["service_public_key"],
    }
    keys = {k["key_id"]: k["public_key"] for k in reply["evidence_keys"]}
    home.save(config, bytes(signing), reply["token"], keys, reply["notices"])
    return config
