"""Real `tracbot serve` processes on one PostgreSQL, killed and doubled.

Every test runs the server as a subprocess against a database of the
session's PostgreSQL and the Graph API simulator as another; what reached
Meta is counted at the simulator (GET /_sim/messages).

- A process killed at each point of the step (TRACBOT_CRASH_AT, see
  storage/crash.py) and started again answers every message exactly once.
- Two processes on one database handle each event once, in order per phone.
- With PostgreSQL stopped the webhook answers 503 (Meta retries), and once
  it is back every message is answered, none twice.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from bench import procs
from bench.webhooks import phone, signature, text_webhook, wamid
from storage.crash import EXIT_STATUS
from tests.servers import PostgresServer

OVERRIDES = {"engine.poll_seconds": 0.2}


def body(run: str, index: int, wa_id: str, text: str = "AYUDA") -> bytes:
    return text_webhook(
        wa_id, wamid(run, index), text, procs.PHONE_NUMBER_ID, 1780318800 + index
    )


async def post(session: aiohttp.ClientSession, bot: procs.Proc, data: bytes) -> int:
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": signature(procs.APP_SECRET, data),
    }
    try:
        async with session.post(f"{bot.url}/webhook", data=data, headers=headers) as r:
            await r.read()
            return r.status
    except aiohttp.ClientError:
        return 0


async def sent(session: aiohttp.ClientSession, sim: procs.Proc) -> list[dict]:
    async with session.get(f"{sim.url}/_sim/messages") as response:
        requests = await response.json()
    return [r for r in requests if r["status"] == 200 and r["body"]]


def reads(requests: list[dict]) -> list[dict]:
    return [r for r in requests if r["body"].get("status") == "read"]


def texts(requests: list[dict]) -> list[dict]:
    return [r for r in requests if r["body"].get("type") == "text"]


async def settled(
    session: aiohttp.ClientSession,
    sim: procs.Proc,
    expected_reads: int,
    bots: list[procs.Proc],
    timeout: float = 30.0,  # noqa: ASYNC109 - a plain timeout reads best here
) -> list[dict]:
    """Wait for the read marks, then a little longer for any duplicate."""
    deadline = time.monotonic() + timeout
    while len(reads(await sent(session, sim))) < expected_reads:
        if time.monotonic() > deadline:
            logs = "\n".join(bot.log_tail(3000) for bot in bots)
            raise AssertionError(f"replies missing; server logs:\n{logs}")
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    return await sent(session, sim)


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[procs.Proc]:
    sim = procs.simulator(log_dir=tmp_path).start()
    yield sim
    sim.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


def server(sim: procs.Proc, url: str, folder: Path, **env: str) -> procs.Proc:
    folder.mkdir(exist_ok=True)
    bot = procs.tracbot(sim.url, url, folder, overrides=OVERRIDES, log_level="INFO")
    bot.env.update(env)
    return bot


@pytest.mark.parametrize("point", ["after_engine", "in_commit", "after_commit"])
async def test_a_kill_at_each_point_of_the_step_answers_once(
    point: str, postgres_db, simulator, http, tmp_path: Path
) -> None:
    phones = [phone(n) for n in range(3)]
    bodies = [body(point, n, wa_id) for n, wa_id in enumerate(phones)]

    # The first event to reach the point kills the process, as SIGKILL.
    bot = server(simulator, postgres_db.dsn, tmp_path / "a", TRACBOT_CRASH_AT=point)
    bot.start()
    statuses = [await post(http, bot, data) for data in bodies]
    assert bot.popen.wait(timeout=20) == EXIT_STATUS
    assert "crash point" in bot.log_tail()

    # Started again on the same database; Meta retries what got no 200.
    again = server(simulator, postgres_db.dsn, tmp_path / "b").start()
    try:
        for n, status in enumerate(statuses):
            if status != 200:
                assert await post(http, again, bodies[n]) == 200
        requests = await settled(http, simulator, len(phones), [bot, again])
    finally:
        again.stop()

    read_ids = Counter(r["body"]["message_id"] for r in reads(requests))
    assert read_ids == Counter(wamid(point, n) for n in range(len(phones)))
    replies = Counter(r["body"]["to"] for r in texts(requests))
    assert replies == Counter(phones), "each message answered exactly once"


async def test_two_processes_keep_order_per_phone_and_handle_each_event_once(
    postgres_db, simulator, http, tmp_path: Path
) -> None:
    phones, per_phone = 24, 5
    bots = [
        server(simulator, postgres_db.dsn, tmp_path / name).start()
        for name in ("one", "two")
    ]

    # Each phone writes its messages one after another, alternately to
    # either process, as Meta's deliveries land on any server.
    async def write(p: int) -> None:
        for m in range(per_phone):
            index = p * per_phone + m
            data = body("pair", index, phone(p))
            assert await post(http, bots[(p + m) % 2], data) == 200

    try:
        await asyncio.gather(*(write(p) for p in range(phones)))
        requests = await settled(http, simulator, phones * per_phone, bots)
    finally:
        for bot in bots:
            bot.stop()

    # The order each phone's events were handled in: that of the read
    # marks their steps queued (outbox ids). The order read marks reach
    # Meta is the sender's, which sends them side by side, best effort.
    connection = await asyncpg.connect(postgres_db.dsn)
    try:
        rows = await connection.fetch(
            "SELECT body FROM outbox WHERE kind = 'read' ORDER BY id"
        )
    finally:
        await connection.close()
    handled: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        index = int(json.loads(row["body"])["message_id"].rsplit(".", 1)[1])
        handled[phone(index // per_phone)].append(index % per_phone)

    assert len(handled) == phones
    for wa_id, order in handled.items():
        assert order == list(range(per_phone)), (wa_id, order)
    assert Counter(r["body"]["message_id"] for r in reads(requests)) == Counter(
        wamid("pair", n) for n in range(phones * per_phone)
    ), "each message marked read exactly once"
    assert Counter(r["body"]["to"] for r in texts(requests)) == Counter(
        {phone(p): per_phone for p in range(phones)}
    )
    # Both processes took part (the log of each names the steps it ran).
    assert all("message handled" in bot.log_tail(200_000) for bot in bots)


async def test_a_stopped_database_gets_503_then_everything_is_answered(
    postgres_server, simulator, http, tmp_path: Path
) -> None:
    # A server of its own: stopping the session's would break other tests.
    with PostgresServer() as database:
        bot = server(simulator, database.dsn, tmp_path / "bot").start()
        try:
            assert await post(http, bot, body("down", 0, phone(0))) == 200
            await settled(http, simulator, 1, [bot])

            database.stop()
            down = [await post(http, bot, body("down", n, phone(n))) for n in (1, 2)]
            assert down == [503, 503]

            database.start()
            for n in (1, 2):
                assert await post(http, bot, body("down", n, phone(n))) == 200
            requests = await settled(http, simulator, 3, [bot])
        finally:
            bot.stop()

    assert Counter(r["body"]["to"] for r in texts(requests)) == Counter(
        phone(n) for n in range(3)
    )
    assert len(reads(requests)) == 3


async def test_logins_refused_for_a_while_stop_nothing_for_good(
    postgres_server, simulator, http, tmp_path: Path
) -> None:
    # A password rotated (or a role's login refused) for a few seconds
    # ended the dispatcher: later messages were stored, never answered,
    # and /readyz said ready.
    role = f"r_{uuid.uuid4().hex[:12]}"
    postgres_server.psql(f"CREATE ROLE {role} LOGIN PASSWORD 'first'")
    postgres_server.psql(f"CREATE DATABASE {role} OWNER {role}")
    dsn = f"postgresql://{role}:first@127.0.0.1:{postgres_server.port}/{role}"
    bot = server(simulator, dsn, tmp_path / "bot").start()
    try:
        assert await post(http, bot, body("login", 0, phone(0))) == 200
        await settled(http, simulator, 1, [bot])

        postgres_server.psql(f"ALTER ROLE {role} PASSWORD 'rotated'")
        postgres_server.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE usename = '{role}'"
        )
        assert await post(http, bot, body("login", 1, phone(1))) == 503
        await asyncio.sleep(1.5)  # the dispatcher and the sender meet it too

        postgres_server.psql(f"ALTER ROLE {role} PASSWORD 'first'")
        for n in (1, 2):
            assert await post(http, bot, body("login", n, phone(n))) == 200
        requests = await settled(http, simulator, 3, [bot])
    finally:
        bot.stop()
        postgres_server.drop_database(role)
        postgres_server.psql(f"DROP ROLE {role}")

    assert Counter(r["body"]["to"] for r in texts(requests)) == Counter(
        phone(n) for n in range(3)
    )
