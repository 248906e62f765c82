"""`countersign server run` with the database pool's overflow unbounded: a diagnostic for bench/soak.py.

Not the shipped configuration. The shipped service (api/core/db.py) uses SQLAlchemy's default pool
(5 connections + 10 overflow, 30 s checkout timeout) while a request holds its connection from
authentication until its upload is stored, across awaiting the body and a worker thread; with more
requests in flight than pool + threadpool (15 + 40), every worker thread waits for a connection and
every connection waits for a thread, until the 30 s timeout. `python -m bench.soak --unbounded-pool`
runs the service through this module instead, so that what limits throughput past that point shows.

    python -m bench.soak_server server run --data DIR --host 127.0.0.1 --port PORT   (--workers 1 only)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import sqlalchemy  # noqa: E402

import api.core.db  # noqa: E402


def _unbounded(url: Any, **kwargs: Any) -> sqlalchemy.Engine:
    kwargs.setdefault("max_overflow", -1)  # QueuePool: never wait for a connection
    return sqlalchemy.create_engine(url, **kwargs)


def main() -> None:
    if "--workers" in sys.argv and sys.argv[sys.argv.index("--workers") + 1] != "1":
        raise SystemExit("bench.soak_server patches this process only: use --workers 1")
    setattr(api.core.db, "create_engine", _unbounded)  # noqa: B010 - the name make_engine calls
    from countersign.cli import app

    app(prog_name="countersign")


if __name__ == "__main__":
    main()
