"""Everything a running service holds, built once per app by build_services."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.db import make_engine, make_sessionmaker
from api.keys import KeyCustodian
from api.settings import Settings
from api.storage import BlobStore
from api.storage.filesystem import FilesystemStore


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: BlobStore
    keys: KeyCustodian


def make_store(settings: Settings) -> BlobStore:
    return FilesystemStore(settings.data_dir / "objects")


def build_services(settings: Settings) -> Services:
    keys = KeyCustodian.load(settings.data_dir, settings.passphrase())
    engine = make_engine(settings.sqlalchemy_url)
    return Services(settings, engine, make_sessionmaker(engine), make_store(settings), keys)
