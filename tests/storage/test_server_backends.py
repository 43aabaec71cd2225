"""What the server backends promise beyond the contract.

Several processes share one PostgreSQL: a phone is claimed by one of them
at a time, a replayed event is never committed twice, a busy pool fails
fast and a server that goes away gives `StorageUnavailable` until it is
back. Each test runs with asyncpg and with unixODBC + psqlODBC.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from storage import NewInboxEvent, Store, create_store
from storage.errors import EventDone, StorageError, StorageUnavailable
from tests.servers import ODBC_DRIVER, PostgresServer

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


def session_server(backend: str, request: pytest.FixtureRequest) -> PostgresServer:
    """The session's PostgreSQL (skipping without its binaries), and the ODBC
    driver too for the odbc backend (skipping without it)."""
    if backend == "odbc":
        request.getfixturevalue("odbc_driver")
    return request.getfixturevalue("postgres_server")


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

    with pytest.raises(EventDone, match="not pending"):
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
    session_server(backend, request)  # skips without binaries or driver

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
    session_server(backend, request)  # skips without binaries or driver

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


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_login_refused_after_open_is_a_storage_error(
    backend: str, request: pytest.FixtureRequest
) -> None:
    # A rotated password raised asyncpg's InvalidPasswordError through the
    # store: it ended the dispatcher for good while /readyz said ready.
    server = session_server(backend, request)
    role = f"r_{uuid.uuid4().hex[:12]}"
    server.psql(f"CREATE ROLE {role} LOGIN PASSWORD 'first'")
    server.psql(f"CREATE DATABASE {role} OWNER {role}")
    dsn = f"postgresql://{role}:first@127.0.0.1:{server.port}/{role}"
    odbc = (
        f"Driver={{{ODBC_DRIVER}}};Server=127.0.0.1;Port={server.port};"
        f"Database={role};Uid={role};Pwd=first;"
    )
    try:
        async with create_store(url_of(backend, dsn, odbc)) as store:
            await store.add_events([event("e1")])

            server.psql(f"ALTER ROLE {role} PASSWORD 'rotated'")
            server.psql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE usename = '{role}'"
            )
            expected = StorageUnavailable if backend == "postgresql" else StorageError
            with pytest.raises(expected):
                await store.pending_count()

            server.psql(f"ALTER ROLE {role} PASSWORD 'first'")
            assert await store.pending_count() == 1
    finally:
        server.drop_database(role)
        server.psql(f"DROP ROLE {role}")


def frozen(server: PostgresServer, stop: bool) -> None:
    """Stop (or resume) the server and its backends as a hung host would."""
    pid = server.pid
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True
    ).stdout.split()
    for each in (pid, *map(int, children)):
        os.kill(each, signal.SIGSTOP if stop else signal.SIGCONT)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_hung_server_fails_a_call_within_the_statement_timeout(
    backend: str, request: pytest.FixtureRequest
) -> None:
    # A server that stops answering without closing its connections held a
    # webhook 35-65 s (asyncpg) or more than five minutes (ODBC).
    session_server(backend, request)  # skips without binaries or driver

    with PostgresServer() as server:
        url = url_of(backend, server.dsn, server.odbc)
        store = create_store(url, acquire_timeout=1.0, statement_timeout=1.0)
        async with store:
            await store.add_events([event("e1")])

            frozen(server, stop=True)
            try:
                started = time.monotonic()
                with pytest.raises(StorageUnavailable, match="no answer"):
                    await store.add_events([event("e2")])
                elapsed = time.monotonic() - started
            finally:
                frozen(server, stop=False)
            assert elapsed < 4, elapsed

            # Back: the store serves again.
            deadline = time.monotonic() + 20
            while True:
                try:
                    assert await store.add_events([event("e3")]) == 1
                    break
                except StorageUnavailable:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)


async def test_a_bad_postgresql_url_is_a_storage_error_without_its_password() -> None:
    # A port of "5439x" raised a ValueError traceback out of `tracbot migrate`.
    store = create_store("postgresql://tracbot:S3cret@127.0.0.1:5439x/tracbot")
    with pytest.raises(StorageError, match="invalid PostgreSQL URL") as raised:
        await store.open()
    assert "S3cret" not in str(raised.value)


async def test_a_server_that_never_answers_is_said_so() -> None:
    # The reason was empty: "cannot connect to PostgreSQL: ".
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        store = create_store(
            f"postgresql://u:p@127.0.0.1:{port}/db", acquire_timeout=0.5
        )
        with pytest.raises(StorageUnavailable, match="no answer within 0.5s"):
            await store.open()
