"""How the client CLIs print what the service answers: one place, so every command reads alike."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import typer


def when(value: str | None) -> str:
    """An ISO time to the second (what a table column shows); `-` when there is none."""
    return value[:19] if value else "-"


def audit_line(e: Mapping[str, Any]) -> str:
    """One access-log entry: seq, time, outcome, action, actor, target and the stated purpose if any.

    `audit log`, `evidence custody` and anything else that prints the log use this, so an
    auditor comparing two listings compares the same columns.
    """
    purpose = f'  purpose="{e["purpose"]}"' if e.get("purpose") else ""
    head = f"{e['seq']:>6}  {when(e['at'])}  {e['outcome']:<7} {e['action']:<26} {e['actor']:<45}"
    return f"{head} {e.get('target') or '-'}{purpose}"


def echo_audit(entries: list[Mapping[str, Any]]) -> None:
    for entry in entries:
        typer.echo(audit_line(entry))


def echo_json(document: Any) -> None:
    """A JSON answer as the service gave it, indented, non-ASCII (Japanese names) left readable."""
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
