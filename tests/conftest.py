"""Fixtures shared by the test suite: throwaway database servers.

A PostgreSQL server is started once per session, on 127.0.0.1 only, and
each test that needs one gets a database of its own. Missing server
binaries or ODBC driver skip those tests on a developer machine and fail
them in CI, where `scripts/install-system-deps.sh` must have run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.servers import ODBC_DRIVER, PostgresServer, ServerError
from tests.servers import odbc_driver_installed as _odbc_driver_installed


def _missing(reason: str) -> None:
    hint = f"{reason}; run scripts/install-system-deps.sh"
    if os.environ.get("CI"):
        pytest.fail(hint)
    pytest.skip(hint)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session, deleted at its end."""
    try:
        server = PostgresServer()
    except ServerError as exc:
        _missing(str(exc))
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@dataclass(frozen=True, slots=True)
class PostgresDatabase:
    """One empty database of the session's server."""

    server: PostgresServer
    name: str

    @property
    def dsn(self) -> str:
        return self.server.dsn_for(self.name)

    @property
    def odbc(self) -> str:
        return self.server.odbc_for(self.name)

    def set_timezone(self, timezone: str) -> None:
        """Make every new session of this database use another TimeZone."""
        self.server.psql(f"ALTER DATABASE \"{self.name}\" SET timezone = '{timezone}'")


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> Iterator[PostgresDatabase]:
    """A fresh empty database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    postgres_server.create_database(name)
    try:
        yield PostgresDatabase(postgres_server, name)
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def odbc_driver() -> str:
    """The name of the PostgreSQL ODBC driver, skipping if it is missing."""
    if not _odbc_driver_installed():
        _missing(f"ODBC driver {ODBC_DRIVER!r} not in odbcinst.ini")
    return ODBC_DRIVER
