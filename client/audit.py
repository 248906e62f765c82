"""`countersign audit ...`: auditors read, export and verify the access log, and check Merkle proofs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from client.admin import DEFAULT_SERVER, Server, Token
from client.http import ApiClient
from client.output import Json, Tz, echo, echo_audit, echo_json, use_zone
from client.tls import add_tls_options
from evidence.audit_log import ENTRY_FIELDS, entry_hash, verify_file, verify_tree_head
from evidence.errors import ExitCode
from evidence.key_files import KeyFileError, read_public_signing_key
from evidence.merkle import verify_consistency, verify_inclusion
from evidence.text import printable

app = typer.Typer(no_args_is_help=True, help="Read, export and verify the access log (auditors).")


@app.command()
def log(
    after: Annotated[int, typer.Option(help="Only entries after this sequence number.")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 1000,
    as_json: Json = False,
    tz: Tz = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Print access-log entries, oldest first: local time (--tz), who by name, what, the stated purpose."""
    use_zone(tz)
    entries = ApiClient(server, token).json("GET", "/v1/audit", params={"after": after, "limit": limit})
    if as_json:
        echo_json(entries)
    else:
        echo_audit(entries)


@app.command()
def export(
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write (JSON Lines).")],
    after: Annotated[int, typer.Option(min=0, help="Export entries after this sequence number.")] = 0,
    until: Annotated[int | None, typer.Option(min=1, help="Up to this seq (to the next checkpoint).")] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Export the log (or a range), ending at a checkpoint the service signs now."""
    params = {"after": after, **({"until": until} if until else {})}
    client = ApiClient(server, token)
    count = 0
    with client.stream("GET", "/v1/audit/export", params=params) as response, output.open("w", encoding="utf-8") as f:
        for line in response.iter_lines():
            f.write(line + "\n")
            count += line.startswith('{"type": "entry"')
    echo(f"wrote {output}: {count} entries; verify with 'countersign audit verify {output} --public-key ...'")


def _cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="An export from 'countersign audit export'.")],
    public_key: Annotated[str | None, typer.Option(help="The service's Ed25519 public key, hex.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Read the key from a data directory.")] = None,
    jobs: Annotated[
        int,
        typer.Option(
            min=0, help="Processes that scan a v3 export's chunks (0, the default: one per CPU core; 1: none)."
        ),
    ] = 0,
) -> None:
    """Verify an export offline: every link, every checkpoint signature; report the first problem."""
    try:
        if public_key:
            key = bytes.fromhex(public_key)
        elif data:
            key = read_public_signing_key(data)
        else:
            typer.secho(
                "error: pass --public-key (from 'server init' or GET /v1/audit/public-key) or --data: "
                "a key taken from the file itself would prove nothing",
                fg=typer.colors.RED,
                err=True,
            )
            raise typer.Exit(2)
        # Streamed, as bytes: each v3 entry is hashed as it was read.
        report = verify_file(file, key, jobs=jobs or _cores())
    except (ValueError, OSError, KeyFileError) as exc:
        typer.secho(f"error: {printable(str(exc))}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    span = f"seq {report.first_seq}..{report.last_seq}" if report.entries else "no entries"
    if report.ok:
        roots = f"Merkle root checked at {report.tree_heads} tree heads, " if report.tree_heads else ""
        echo(f"OK: {report.entries} entries ({span}), {roots}{report.checkpoints} signed checkpoints verified")
        return
    problem = printable(report.problems[0])  # it may quote the export, which anyone could have edited
    typer.secho(f"FAILED after {report.entries} good entries ({span}): {problem}", fg=typer.colors.RED)
    raise typer.Exit(1)


PublicKey = Annotated[
    str | None,
    typer.Option(help="The service's Ed25519 public key, hex (default: fetched from the server, which proves less)."),
]


def _usage(message: str) -> NoReturn:
    typer.secho(f"error: {printable(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(ExitCode.USAGE)


def _failed(message: str) -> NoReturn:
    typer.secho(f"FAILED: {printable(message)}", fg=typer.colors.RED)
    raise typer.Exit(ExitCode.FAILED)


@dataclass(frozen=True)
class _Head:
    size: int
    root: bytes
    chain_hash: bytes
    at: str
    signature: bytes

    @classmethod
    def parse(cls, raw: Any, where: str) -> _Head:
        try:
            head = cls(
                int(raw["size"]),
                bytes.fromhex(raw["root"]),
                bytes.fromhex(raw["chain_hash"]),
                str(raw["at"]),
                bytes.fromhex(raw["signature"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where} is not a tree head (size, root, chain_hash, at, signature)") from exc
        if head.size < 1 or len(head.root) != 32 or len(head.chain_hash) != 32:
            raise ValueError(f"{where} is not a tree head (size, root, chain_hash, at, signature)")
        return head

    def signed_by(self, key: bytes) -> bool:
        return verify_tree_head(key, self.size, self.root, self.chain_hash, self.at, self.signature)

    def public(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": self.root.hex(),
            "chain_hash": self.chain_hash.hex(),
            "at": self.at,
            "signature": self.signature.hex(),
        }


def _public_client(server: str, token: str | None) -> ApiClient:
    # Tree heads and consistency proofs are public: anyone may check the log, token or not.
    return ApiClient(server, token or "anonymous")


def _service_key(client: ApiClient, public_key: str | None) -> tuple[bytes, str]:
    """The key to check signatures with, and where it came from."""
    if public_key:
        try:
            key = bytes.fromhex(public_key)
        except ValueError:
            _usage("--public-key is not hex")
        if len(key) != 32:
            _usage("--public-key is not a 32-byte Ed25519 key")
        return key, "the pinned key"
    try:
        return bytes.fromhex(client.json("GET", "/v1/audit/public-key")["public_key"]), "the key the server gave"
    except (KeyError, TypeError, ValueError):
        _failed("the server's public key cannot be read")


@app.command()
def prove(
    seq: Annotated[int, typer.Argument(min=1, help="The entry's sequence number.")],
    size: Annotated[int | None, typer.Option(min=1, help="Prove against the tree head of this size.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the proof and the verdict as JSON.")] = False,
    public_key: PublicKey = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Fetch entry SEQ's Merkle inclusion proof and check it here: the tree head's signature, then the path."""
    client = ApiClient(server, token)
    key, source = _service_key(client, public_key)
    reply = client.json("GET", f"/v1/audit/proof/{seq}", params={"size": size} if size else None)
    try:
        entry = reply["entry"]
        head = _Head.parse(reply["tree_head"], "the server's tree head")
        path = [bytes.fromhex(h) for h in reply["path"]]
        leaf_index, tree_size = int(reply["leaf_index"]), int(reply["tree_size"])
        leaf = entry_hash({k: entry[k] for k in ENTRY_FIELDS})
    except (KeyError, TypeError, ValueError) as exc:
        _failed(f"the server's proof cannot be read ({exc})")
    if entry.get("seq") != seq or leaf_index != seq - 1 or tree_size != head.size or (size and head.size != size):
        _failed(f"the server answered for another entry or tree (entry {entry.get('seq')}, tree {head.size})")
    if entry.get("entry_hash") != leaf.hex():
        _failed(f"entry {seq}: its content does not match its hash (altered in the database)")
    if not head.signed_by(key):
        _failed(f"the tree head of size {head.size} is not signed by {source}")
    if not verify_inclusion(leaf, leaf_index, tree_size, path, head.root):
        _failed(f"entry {seq} is not in the tree the service signed at size {head.size}: the log was altered")
    if as_json:
        typer.echo(json.dumps({**reply, "verified": True, "key": source}, indent=2))
        return
    echo(
        f"OK: entry {seq} ({entry.get('action')} by {entry.get('actor')}, at {entry.get('at')}) is in the log's "
        f"Merkle tree of {head.size} entries, root {head.root.hex()}, signed at {head.at} ({source}); "
        f"{len(path)} hashes checked"
    )


def _fetch_head(client: ApiClient, size: int | None) -> _Head:
    try:
        return _Head.parse(client.json("GET", "/v1/audit/tree-head", params={"size": size} if size else None), "reply")
    except ValueError:
        _failed("the server's tree head cannot be read")


@app.command("tree-head")
def tree_head(
    save: Annotated[Path | None, typer.Option(help="Write the tree head to this file (JSON), to check later.")] = None,
    public_key: PublicKey = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Fetch the latest signed tree head and check its signature; keep it with --save."""
    client = _public_client(server, token)
    key, source = _service_key(client, public_key)
    head = _fetch_head(client, None)
    if not head.signed_by(key):
        _failed(f"the tree head of size {head.size} is not signed by {source}")
    if save is not None:
        try:
            save.write_text(json.dumps(head.public(), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            _usage(f"cannot write {save}: {exc.strerror}")
    echo(f"tree head: {head.size} entries, root {head.root.hex()}, signed at {head.at} ({source})")
    if save is not None:
        echo(f"saved to {save}; later: countersign audit consistency {save} <newer size or file>")


def _head_arg(client: ApiClient, value: str) -> _Head:
    """A tree size (fetched from the server) or a saved tree-head file."""
    if value.isdigit():
        return _fetch_head(client, int(value))
    try:
        raw = json.loads(Path(value).read_text(encoding="utf-8"))
    except OSError as exc:
        _usage(f"{value} is neither a tree size nor a readable file ({exc.strerror})")
    except ValueError:
        _usage(f"{value} is not JSON")
    try:
        return _Head.parse(raw, value)
    except ValueError as exc:
        _usage(str(exc))


@app.command()
def consistency(
    old: Annotated[
        str, typer.Argument(help="The older tree head: a tree size or a file from 'audit tree-head --save'.")
    ],
    new: Annotated[str, typer.Argument(help="The newer tree head: a tree size or a saved file.")],
    public_key: PublicKey = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Check that the log at NEW extends the log at OLD: both signatures, then the consistency proof."""
    client = _public_client(server, token)
    key, source = _service_key(client, public_key)
    first, second = _head_arg(client, old), _head_arg(client, new)
    for label, head in (("old", first), ("new", second)):
        if not head.signed_by(key):
            _failed(f"the {label} tree head (size {head.size}) is not signed by {source}")
    if first.size > second.size:
        _failed(f"the log at {second.size} is shorter than the log at {first.size}: entries were removed")
    reply = client.json("GET", "/v1/audit/consistency", params={"old": first.size, "new": second.size})
    try:
        proof = [bytes.fromhex(h) for h in reply["proof"]]
    except (KeyError, TypeError, ValueError):
        _failed("the server's consistency proof cannot be read")
    # Checked against the roots held here (a saved file's), never against what the server says now.
    if not verify_consistency(first.size, second.size, first.root, second.root, proof):
        _failed(
            f"the log at {second.size} does not extend the log at {first.size}: "
            f"entries before {first.size} were rewritten (or the proof is wrong)"
        )
    echo(
        f"OK: the log at {second.size} extends the log at {first.size}: nothing before {first.size} was rewritten "
        f"(both tree heads signed by {source})"
    )


add_tls_options(app)  # --ca-file and --pin on every command above with --server: keep last
