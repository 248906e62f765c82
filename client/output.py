"""How the client CLIs print what the service answers: one place, so every command reads alike."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import typer

from evidence.text import forbidden, printable


def echo(text: str = "") -> None:
    """Print a line made of what the service answered: no control or invisible character reaches
    the terminal as itself (a name or a purpose cannot retitle the window or clear the screen)."""
    typer.echo(printable(text))


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
        echo(audit_line(entry))


def echo_json(document: Any) -> None:
    """A JSON answer as the service gave it, indented, non-ASCII (Japanese names) left readable."""
    text = json.dumps(document, indent=2, ensure_ascii=False)
    # Inside JSON strings: any invisible character becomes its \\u escape, so the JSON stays valid.
    typer.echo("".join(json.dumps(ch)[1:-1] if forbidden(ch) and ch != "\n" else ch for ch in text))
