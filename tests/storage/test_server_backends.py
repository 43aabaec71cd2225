"""What the server backends promise beyond the contract.

Several processes share one PostgreSQL: a phone is claimed by one of them
at a time, a replayed event is never committed twice, a busy pool fails
fast and a server that goes away gives `StorageUnavailable` until it is
back. Each test runs with asyncpg and with unixODBC + psqlODBC.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from storage import NewInboxEvent, Store, create_store
from storage.errors import StorageError, StorageUnavailable
from tests.servers import PostgresServer

BACKENDS = ["postgresql", "odbc"]


def url_of(backend: str, dsn: str, odbc: str) -> str:
    return dsn if backend == "postgresql" else f"odbc:{odbc}"


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest) -> str:
    database = request.getfixturevalue("postgres_db")
    if request.param == "odbc":
        request.getfixturevalue("odbc_driver")
    return url_of(request.param, database.dsn, database.odbc)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with create_store(store_url) as opened:
        yield opened


def event(key: str) -> NewInboxEvent:
    return NewInboxEvent(key, "message", "56911111111", "1065", {"id": key})


async def test_claim_excludes_a_second_holder(store: Store, store_url: str) -> None:
    async with create_store(store_url) as other:
        async with store.claim("561") as mine:
            assert mine is True
            async with other.claim("561") as theirs:
                assert theirs is False
            async with store.claim("561") as again:
                assert again is False, "a second connection of one store"
            async with other.claim("562") as elsewhere:
                assert elsewhere is True

        async with other.claim("561") as released:
            assert released is True


async def test_claim_is_released_when_its_block_raises(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.claim("561") as held:
            assert held
            raise RuntimeError("the step crashed")

    async with store.claim("561") as again:
        assert again is True


async def test_commit_step_refuses_an_event_already_done(store: Store) -> None:
    # Two processes replaying one event must not queue its replies twice.
    await store.add_events([event("e1")])
    pending = await store.next_event("56911111111")
    await store.commit_step(pending.id, None, [])

    with pytest.raises(StorageError, match="not pending"):
        await store.commit_step(pending.id, None, [])

    assert await store.outbox_items() == []


async def test_an_exhausted_pool_fails_within_the_timeout(store_url: str) -> None:
    store = create_store(store_url, pool_min=1, pool_max=2, acquire_timeout=0.5)
    async with store, store.claim("561"), store.claim("562"):
        started = time.monotonic()
        with pytest.raises(StorageError, match="no database connection"):
            await store.pending_count()
        elapsed = time.monotonic() - started

    assert 0.4 < elapsed < 3, elapsed


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_stopped_server_is_unavailable_until_it_is_back(
    backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "odbc":
        request.getfixturevalue("odbc_driver")
    request.getfixturevalue("postgres_server")  # skips without binaries

    # A server of its own: stopping the session's would break other tests.
    with PostgresServer() as server:
        url = url_of(backend, server.dsn, server.odbc)
        async with create_store(url, acquire_timeout=2.0) as store:
            await store.add_events([event("e1")])

            server.stop()
            with pytest.raises(StorageUnavailable):
                await store.pending_count()
            with pytest.raises(StorageUnavailable):
                await create_store(url, acquire_timeout=2.0).open()

            server.start()
            assert await store.pending_count() == 1
            assert await store.add_events([event("e2")]) == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_restart_nobody_saw_fails_no_call(
    backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "odbc":
        request.getfixturevalue("odbc_driver")
    request.getfixturevalue("postgres_server")  # skips without binaries

    with PostgresServer() as server:
        url = url_of(backend, server.dsn, server.odbc)
        store = create_store(url, pool_min=3, pool_max=4, acquire_timeout=2.0)
        async with store:
            # Three connections in the pool, each used once and then idle.
            async with store.claim("561"), store.claim("562"):
                await store.add_events([event("e1")])

            # Every pooled connection dies idle while the server restarts.
            server.stop()
            server.start()

            assert await store.pending_count() == 1
            assert await store.add_events([event("e2")]) == 1
            async with store.claim("561") as held:
                assert held is True
