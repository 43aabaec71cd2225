"""Where the SQLite store's time goes on the path of one message.

    .venv/bin/python -m bench.sqlite_costs [--messages 3000]
                                           [--concurrency 1,8,32]

Runs, in this process and with no HTTP, the store calls one inbound
message causes in `tracbot serve`: the webhook's insert, the dispatcher's
sweep, `next_turns`, the link look-up and `commit_step` (new state, one
reply with its template fallback, done mark), then the sender's
`due_outbox`, `last_inbound` and `record_sent`. `--concurrency` messages
are in progress at once, as many phones are in the server, so that group
commit has calls to share a transaction with.

It prints the process CPU per message (the checkpointer thread included)
and, per SQL statement, the time spent in `execute` per message, which
shows what a COMMIT costs next to the statements it commits.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import storage.sqlite as sqlite_backend
from storage import sqlite_batch
from storage.base import NewInboxEvent, NewOutbound
from storage.sqlite import SqliteStore

NUMBER = "200000000000002"
TEXT = "No entendí tu mensaje. Escribe *AYUDA* para ver lo que puedo hacer."
FALLBACK_NAME = "respuesta"


class Timings:
    """Seconds and calls of `execute` per statement text."""

    def __init__(self) -> None:
        self.by_sql: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])

    def connection_class(self) -> type[sqlite3.Connection]:
        timings = self

        # The store asks for its own class (it carries the write turn).
        class Timed(sqlite_batch.Connection):
            def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
                started = time.perf_counter()
                try:
                    return super().execute(sql, *args)
                finally:
                    timings.add(sql, time.perf_counter() - started)

            def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
                started = time.perf_counter()
                try:
                    return super().executemany(sql, *args)
                finally:
                    timings.add(sql, time.perf_counter() - started)

        return Timed

    def add(self, sql: str, seconds: float) -> None:
        entry = self.by_sql[" ".join(sql.split())[:72]]
        entry[0] += 1
        entry[1] += seconds


def inbound(n: int, phone: str) -> NewInboxEvent:
    payload = {
        "kind": "message",
        "wamid": f"wamid.costs.{n}",
        "wa_id": phone,
        "phone_number_id": NUMBER,
        "type": "text",
        "text": "hola",
        "timestamp": 1764800000,
        "raw": {"from": phone, "id": f"wamid.costs.{n}", "type": "text"},
    }
    return NewInboxEvent(f"wamid.costs.{n}", "message", phone, NUMBER, payload)


def reply(phone: str) -> NewOutbound:
    body = {"to": phone, "type": "text", "text": {"preview_url": False, "body": TEXT}}
    fallback = {
        "to": phone,
        "type": "template",
        "template": {"name": FALLBACK_NAME, "language": {"code": "es"}},
    }
    return NewOutbound(phone, NUMBER, "message", body, fallback=fallback)


async def one_message(store: SqliteStore, n: int, phone: str) -> None:
    await store.add_events([inbound(n, phone)])
    await store.pending_phones(limit=64)
    turns = await store.next_turns(phone, 8)
    await store.get_link(phone)
    conversation = turns.conversation
    assert conversation is not None
    conversation.flow, conversation.state = "no_entendi", "fin"
    for event in turns.events:
        await store.commit_step(event.id, conversation, [reply(phone)])
    items = await store.due_outbox(limit=100)
    await store.last_inbound([phone])
    for item in items:
        await store.record_sent(item.id, f"wamid.sent.{n}", "accepted", 1, 3)


async def measure(folder: Path, messages: int, concurrency: int) -> dict[str, Any]:
    timings = Timings()
    connect = sqlite_backend.sqlite3.connect
    factory = timings.connection_class()

    def timed_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs["factory"] = factory
        return connect(*args, **kwargs)

    path = folder / f"costs-{concurrency}.db"
    sqlite_backend.sqlite3.connect = timed_connect  # this process only
    try:
        async with SqliteStore(f"sqlite:///{path}") as store:
            for n in range(200):  # warm the caches and the WAL
                await one_message(store, -n - 1, f"5698{n:07d}")
            timings.by_sql.clear()
            started = time.process_time()
            for first in range(0, messages, concurrency):
                await asyncio.gather(
                    *(
                        one_message(store, n, f"5699{n % 1000:07d}")
                        for n in range(first, min(first + concurrency, messages))
                    )
                )
            cpu = time.process_time() - started
    finally:
        sqlite_backend.sqlite3.connect = connect
    return {"cpu_us": cpu / messages * 1e6, "by_sql": dict(timings.by_sql)}


def report(concurrency: int, result: dict[str, Any], messages: int) -> None:
    print(f"\nconcurrency {concurrency}: {result['cpu_us']:.0f} µs CPU a message")
    rows = sorted(result["by_sql"].items(), key=lambda kv: -kv[1][1])
    total = sum(seconds for _, seconds in result["by_sql"].values())
    print(f"  {total / messages * 1e6:6.1f} µs a message in execute, of which:")
    for sql, (calls, seconds) in rows[:12]:
        print(
            f"  {seconds / messages * 1e6:6.1f} µs  {calls / messages:4.2f}x  "
            f"{seconds / calls * 1e6:6.1f} µs a call  {sql}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sqlite_costs")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--concurrency", default="1,8,32")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tracbot-costs-") as folder:
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            result = asyncio.run(measure(Path(folder), args.messages, concurrency))
            report(concurrency, result, args.messages)


if __name__ == "__main__":
    main()
