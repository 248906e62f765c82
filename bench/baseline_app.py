"""The ingest baseline: a bare ASGI app that stores each PUT body in a file with fsync and answers 201.

No framework, no auth, no verification, no database: only what any durable
upload endpoint must do. The blocking write+fsync runs in anyio's worker
threads, as Countersign's does (starlette's run_in_threadpool). It is served
by uvicorn.run with the same options as `countersign server run` (log_level="info",
so uvicorn's access log is on for both; with --workers N > 1 the app is loaded by
import string in N worker processes, as `countersign server run --workers N` does).

    python -m bench.baseline_app --dir /tmp/x --port 8001 [--workers 2]
"""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path
from typing import Any

import anyio.to_thread

Scope = dict[str, Any]


def _store(path: Path, body: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)


def make_app(target: Path) -> Any:
    target.mkdir(parents=True, exist_ok=True)
    numbers = itertools.count()

    async def respond(send: Any, status: int) -> None:
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["method"] == "GET":  # readiness probe
            await respond(send, 200)
            return
        if scope["method"] != "PUT":
            await respond(send, 405)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        name = f"{os.getpid()}-{next(numbers):09d}.seg"  # one counter per worker process
        await anyio.to_thread.run_sync(_store, target / name, b"".join(chunks))
        await respond(send, 201)

    return app


DIR_ENV = "BENCH_BASELINE_DIR"


def app_from_env() -> Any:
    """Factory for uvicorn's worker processes (--workers > 1): the folder comes from the environment."""
    return make_app(Path(os.environ[DIR_ENV]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True, help="folder the bodies are written to")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    args = parser.parse_args()
    import uvicorn

    # What api/cli.py `run` does: the app object for one worker, an import string for several.
    if args.workers == 1:
        uvicorn.run(make_app(args.dir), host="127.0.0.1", port=args.port, log_level="info")
    else:
        os.environ[DIR_ENV] = str(args.dir.resolve())
        uvicorn.run(
            "bench.baseline_app:app_from_env",
            host="127.0.0.1",
            port=args.port,
            workers=args.workers,
            factory=True,
            log_level="info",
        )


if __name__ == "__main__":
    main()
