"""The `store_url` and `store` fixtures: each test once per backend.

A SQLite file, PostgreSQL through asyncpg and PostgreSQL through unixODBC
and psqlODBC, each time on an empty database of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from storage import Store, create_store

BACKENDS = ["sqlite", "postgresql", "odbc"]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/t.db"
    database = request.getfixturevalue("postgres_db")
    if request.param == "postgresql":
        return database.dsn
    request.getfixturevalue("odbc_driver")
    return f"odbc:{database.odbc}"


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with create_store(store_url) as opened:
        yield opened
