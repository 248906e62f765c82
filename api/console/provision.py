"""`countersign server console-login NAME`: give a user a console sign-in, on the server itself.

As `approve-user` and `reset-admin`: whoever holds the data directory (and its passphrase) holds
the service's keys anyway; the change is audited as the system's.
"""

from __future__ import annotations

from api.console.accounts import Provisioned, provision
from api.core.db import make_engine, transaction
from api.core.keys import KeyCustodian
from api.core.services import audit_sessions
from api.core.settings import Settings


def provision_on_server(settings: Settings, name: str, password: str) -> Provisioned:
    custodian = KeyCustodian.load(settings.data_dir, settings.passphrase())
    assert custodian.signing_key is not None
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with transaction(audit_sessions(engine, custodian.signing_key, settings)) as session:
            return provision(session, name, password)
    finally:
        engine.dispose()
