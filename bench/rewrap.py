"""Rewrap rate: `countersign keys rewrap` (api.key_custody.rewrap) over N recordings, in recordings/s.

N recordings (default 100,000) are inserted in bulk, each with a real sealed box (its random data
key sealed to the first evidence key); the key is rotated and retired, then rewrap reseals every
data key to the new key, committing (and auditing) per batch. The baseline is the crypto alone in
the same process: SealedBox open with the old private key + seal to the new public key, in a loop.

    python -m bench.rewrap [--recordings 100000] [--batch 1000] [--database-url URL]

SQLite in a temporary data directory unless --database-url (e.g. PostgreSQL) is given.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import nacl.public  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from api import key_custody  # noqa: E402
from api.bootstrap import init_data_dir  # noqa: E402
from api.core.db import make_engine  # noqa: E402
from api.core.models import Device, Recording, SealedKey, Site, utcnow  # noqa: E402
from api.core.settings import Settings  # noqa: E402
from bench._meta import load_average, revision  # noqa: E402

CHUNK = 5000


def populate(settings: Settings, total: int, public: nacl.public.PublicKey, key_id: str) -> float:
    """Insert `total` recordings, each with a data key sealed to `public`; return seconds taken."""
    engine = make_engine(settings.sqlalchemy_url)
    box = nacl.public.SealedBox(public)
    now = utcnow()
    began = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(insert(Site), [{"id": "bench", "name": "bench", "created_at": now}])
        connection.execute(
            insert(Device),
            [{"id": "bench-device", "name": "bench", "site_id": "bench", "created_at": now, "disabled": False}],
        )
    for lo in range(0, total, CHUNK):
        rows, keys = [], []
        for i in range(lo, min(total, lo + CHUNK)):
            rid = str(uuid.UUID(int=i + 1))
            started = now - timedelta(seconds=i)
            rows.append(
                {
                    "id": rid,
                    "device_id": "bench-device",
                    "site_id": "bench",
                    "started_at": started,
                    "status": "complete",
                    "header": {},
                    "header_signature": b"",
                    "consent_outcome": "given",
                    "segment_count": 0,
                    "head_hash": bytes(32),
                    "last_activity_at": started,
                    "created_at": started,
                    "ended_at": started,
                }
            )
            keys.append({"recording_id": rid, "key_id": key_id, "sealed": box.encrypt(os.urandom(32))})
        with engine.begin() as connection:
            connection.execute(insert(Recording), rows)
            connection.execute(insert(SealedKey), keys)
    engine.dispose()
    return time.perf_counter() - began


def baseline(old: nacl.public.PrivateKey, new: nacl.public.PublicKey, count: int) -> float:
    """Open + seal `count` data keys in a loop, no database: recordings/s."""
    blobs = [nacl.public.SealedBox(old.public_key).encrypt(os.urandom(32)) for _ in range(count)]
    opener, sealer = nacl.public.SealedBox(old), nacl.public.SealedBox(new)
    began = time.perf_counter()
    for blob in blobs:
        sealer.encrypt(opener.decrypt(blob))
    return count / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=key_custody.DEFAULT_BATCH)
    parser.add_argument("--database-url", default=None, help="an empty database (default: SQLite in a temp dir)")
    args = parser.parse_args()
    print(f"bench.rewrap: {revision()}, load {load_average()}, {args.recordings} recordings, batch {args.batch}")
    with tempfile.TemporaryDirectory(prefix="countersign-rewrap-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", env="development", database_url=args.database_url)
        init = init_data_dir(settings)
        with key_custody.open_custody(settings) as custody:
            k1 = init.evidence_key_id
            old = custody.keys.evidence_keys[k1]
            took = populate(settings, args.recordings, old.public_key, k1)
            print(f"inserted {args.recordings} recordings with real sealed data keys in {took:.1f} s")
            k2, _ = key_custody.rotate(custody)
            key_custody.retire(custody, k1)
            began = time.perf_counter()
            result = key_custody.rewrap(custody, batch=args.batch)
            wall = time.perf_counter() - began
            with custody.sessions() as session:
                sealed_new = session.scalar(select(func.count()).where(SealedKey.key_id == k2))
            new_public = custody.keys.evidence_keys[k2].public_key
        assert result.rewrapped == args.recordings == sealed_new, (result.rewrapped, sealed_new)
        rate = result.rewrapped / wall
        raw = baseline(old, new_public, min(args.recordings, 20_000))
        done = f"{result.rewrapped} recordings in {wall:.1f} s, {result.batches} batches"
        print(f"rewrap: {done}: {rate:,.0f} recordings/s")
        print(f"baseline (SealedBox open + seal, same process, no database): {raw:,.0f} recordings/s")
        print(f"ratio rewrap/baseline: {rate / raw:.2f}")


if __name__ == "__main__":
    main()
