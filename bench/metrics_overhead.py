"""What the /metrics request timing (api.metrics.RequestMetrics) costs per request.

The same app (SQLite in a temporary data directory) with and without the middleware, driven
straight through ASGI (no sockets, no HTTP parsing, so the difference is not hidden in network
noise): N requests of GET /healthz (one `SELECT 1`) and of GET on an unknown path (a 404 from the
router, the cheapest answer there is), and around a bare ASGI app (the middleware alone), in
rounds of alternating order so load on the machine hits both alike.

    .venv/bin/python -m bench.metrics_overhead               # 10,000 requests each way
    .venv/bin/python -m bench.metrics_overhead --requests 50000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._meta import load_average, revision  # noqa: E402


def build(data: Path, timed: bool) -> Any:
    from api.app import create_app
    from api.bootstrap import init_data_dir
    from api.core.settings import Settings
    from api.metrics import RequestMetrics

    settings = Settings(data_dir=data, env="development")
    if not (data / "keys").exists():
        init_data_dir(settings)
    app = create_app(settings)
    if not timed:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not RequestMetrics]  # type: ignore[comparison-overlap]
    return app


async def drive(app: Any, path: str, n: int) -> float:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    start = time.perf_counter()
    for _ in range(n):
        await app(dict(scope), receive, send)
    return time.perf_counter() - start


async def _bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The smallest app: a routed 200 (as FastAPI leaves it in the scope), to time the middleware alone."""
    scope["route"] = _bare
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


_bare.path = "/healthz"  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        from api.metrics import RequestMetrics

        whole = {"without": build(Path(tmp) / "d", False), "with": build(Path(tmp) / "d", True)}
        alone: dict[str, Any] = {"without": _bare, "with": RequestMetrics(_bare)}  # type: ignore[arg-type]
        per = args.requests // args.rounds
        print(f"revision {revision()}, load {load_average()}, {args.requests} requests each way")
        for path, apps in (("/healthz", whole), ("/no-such-path", whole), ("(alone)", alone)):
            for app in apps.values():
                asyncio.run(drive(app, path, 200))  # warm-up: builds the middleware stack
            spent: dict[str, list[float]] = {name: [] for name in apps}
            for round_ in range(args.rounds):
                order = list(apps.items()) if round_ % 2 == 0 else list(reversed(apps.items()))  # no order bias
                for name, app in order:
                    spent[name].append(asyncio.run(drive(app, path, per)))
            us = {name: statistics.median(t) / per * 1e6 for name, t in spent.items()}
            print(
                f"GET {path:14} without {us['without']:7.1f} µs/request   with {us['with']:7.1f} µs/request"
                f"   cost {us['with'] - us['without']:+6.1f} µs ({(us['with'] / us['without'] - 1) * 100:+.1f} %)"
            )


if __name__ == "__main__":
    main()
