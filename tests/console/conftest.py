"""Console fixtures: the World of tests/conftest.py, with console sign-ins for its people."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from tests.conftest import World
from tests.console.support import NAMES, Login, provision_login


@pytest.fixture
def logins(app: FastAPI, world: World) -> dict[str, Login]:
    return {role: provision_login(app, name) for role, name in NAMES.items()}
