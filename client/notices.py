"""`countersign admin notice ...`: notice texts (new versions only) and their spoken readings.

A notice version's text never changes once added (consent records name the version and its
hash): `notice add` makes the next version. `notice audio upload` sends a recording of it (WAV,
FLAC or Ogg; the service keeps 16-bit PCM WAV), `notice audio generate` has the service read it
with espeak-ng. Devices fetch readings with the notices, checking each one's SHA-256.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from client.errors import fail
from client.http import ApiClient
from client.output import echo
from evidence.errors import CountersignError, ExitCode

# The same --server/--token options as client.admin (which adds this group, so cannot be imported here).
Server = Annotated[str, typer.Option("--server", envvar="COUNTERSIGN_SERVER", help="Service URL.")]
Token = Annotated[str | None, typer.Option("--token", envvar="COUNTERSIGN_TOKEN", help="Your API token.")]
DEFAULT_SERVER = "http://127.0.0.1:8000"
MAX_BYTES = 5 * 1024 * 1024  # the service's limit; checked here first, so a big file is not sent at all

notice_app = typer.Typer(no_args_is_help=True, help="Consent notices: new text versions and their spoken readings.")
audio_app = typer.Typer(no_args_is_help=True, help="A notice version's spoken reading (devices play it).")
notice_app.add_typer(audio_app, name="audio")

Version = Annotated[int, typer.Option("--version", min=1, help="The notice version (see `notice list`).")]
Language = Annotated[str, typer.Option("--language", help="ja or en.")]


class NoticeFileError(CountersignError):
    """Cannot use that file"""

    exit_code = ExitCode.USAGE


def _read(path: Path, what: str, limit: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise fail(NoticeFileError(f"{path}: {size} bytes, more than the {limit} a {what} may have"))
        return path.read_bytes()
    except OSError as exc:
        raise fail(NoticeFileError(f"{path}: {exc.strerror or exc}")) from exc


def _audio_url(notice_id: str, version: int, language: str) -> str:
    return f"/v1/notices/{notice_id}/versions/{version}/{language}/audio"


def _reading_line(r: dict[str, object]) -> str:
    return (
        f"notice {r['notice_id']} v{r['version']} ({r['language']}): reading {r['seconds']} s, "
        f"{r['size']} bytes, sha256 {r['sha256']} ({r['source']})"
    )


@notice_app.command("list")
def notice_list(server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """List the notices devices receive, and whether each has a spoken reading."""
    for n in ApiClient(server, token).json("GET", "/v1/notices"):
        reading = f"reading {str(n['audio_sha256'])[:12]}" if n.get("audio") else "no reading"
        echo(f"{n['id']}\tv{n['version']}\t{n['language']}\t{reading}\t{n['title']}")


@notice_app.command("add")
def notice_add(
    notice_id: Annotated[str, typer.Option("--id", help="Notice id, e.g. counter-recording (a new id starts at v1).")],
    language: Language,
    title: Annotated[str, typer.Option("--title", help="The heading shown above the text.")],
    text_file: Annotated[Path, typer.Option("--text-file", help="UTF-8 file holding the notice text.")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Add your own notice text as a new version (earlier versions stay as they are)."""
    try:
        text = _read(text_file, "notice text", 64 * 1024).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(NoticeFileError(f"{text_file}: not UTF-8 text ({exc.reason})")) from exc
    body = {"id": notice_id, "language": language, "title": title, "text": text.strip()}
    n = ApiClient(server, token).json("POST", "/v1/notices", json=body)
    echo(f"notice {n['id']} v{n['version']} ({n['language']}) added, sha256 {n['sha256']}")
    where = f"{n['id']} --version {n['version']} --language {n['language']}"
    echo(f"give it a reading: countersign admin notice audio generate {where} (or: audio upload ... FILE)")


@audio_app.command("upload")
def audio_upload(
    notice_id: Annotated[str, typer.Argument(help="Notice id.")],
    file: Annotated[Path, typer.Argument(help="The reading: WAV, FLAC or Ogg, at most 5 MB and 5 minutes.")],
    version: Version,
    language: Language,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Upload a recorded reading of a notice version (replaces any it had)."""
    data = _read(file, "notice reading", MAX_BYTES)
    headers = {"Content-Type": "application/octet-stream"}
    r = ApiClient(server, token).json("PUT", _audio_url(notice_id, version, language), content=data, headers=headers)
    echo(_reading_line(r))


@audio_app.command("generate")
def audio_generate(
    notice_id: Annotated[str, typer.Argument(help="Notice id.")],
    version: Version,
    language: Language,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Have the service read the notice version aloud with espeak-ng (replaces any reading it had)."""
    r = ApiClient(server, token).json("POST", _audio_url(notice_id, version, language) + "/generate")
    echo(_reading_line(r))
