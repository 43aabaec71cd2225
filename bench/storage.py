"""Storage benchmark: events per second of one step, per backend and size.

    .venv/bin/python -m bench.storage [--sizes 1000,100000,1000000]
                                      [--events 400] [--backends ...]

One event's work is what the dispatcher and the sender ask of the store:
store the inbound event, take it (`next_event`), load the phone's
conversation, move it to another state, commit the step (conversation,
one reply, done mark), take the reply from the outbox and mark it sent.
Events run one after another, each for a phone that already has a stored
conversation, so the figure is the latency-bound rate of one worker.

Before each run the database is filled with N stored conversations (and an
outbox row each) by bulk load: PostgreSQL's COPY for the server backends,
one executemany transaction for SQLite. PostgreSQL runs as a throwaway
server (tests/servers.py) on 127.0.0.1, with fsync off like the tests';
SQLite runs on a file with its production settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from storage import Conversation, NewInboxEvent, NewOutbound, create_store
from tests.servers import PostgresServer, odbc_driver_installed

BACKENDS = ("sqlite", "postgresql", "odbc")
PHONE_NUMBER_ID = "200000000000002"
SLOTS = {"rut": "12345678-5", "intentos": 1, "nota": "camión ñandú 🚚"}


def wa_id(n: int) -> str:
    return str(56900000000 + n)


async def fill(backend: str, url: str, dsn: str | None, size: int) -> float:
    """Store `size` conversations and outbox rows; return the seconds taken."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    slots = json.dumps(SLOTS, ensure_ascii=False)
    reply = json.dumps({"type": "text", "text": {"body": "Hola"}})
    if backend == "sqlite":
        path = url.removeprefix("sqlite:///")
        stamp = now.isoformat()
        db = sqlite3.connect(path)
        with db:
            db.executemany(
                "INSERT INTO conversations (wa_id, flow, state, slots, updated_at) "
                "VALUES (?, 'vincular', 'pedir_rut', ?, ?)",
                ((wa_id(n), slots, stamp) for n in range(size)),
            )
            db.executemany(
                "INSERT INTO outbox (wa_id, phone_number_id, kind, body, status, "
                "next_attempt_at, created_at, updated_at, wamid) "
                "VALUES (?, ?, 'message', ?, 'read', ?, ?, ?, ?)",
                (
                    (wa_id(n), PHONE_NUMBER_ID, reply, stamp, stamp, stamp, f"w.{n}")
                    for n in range(size)
                ),
            )
        # Fold the load into the database file, as a long-running site's
        # checkpoints would have, then let the store work alone.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("ANALYZE")
        db.close()
        return time.perf_counter() - started

    # Both server backends live in PostgreSQL: COPY through asyncpg. The
    # ODBC schema keeps naive UTC times, the asyncpg one timestamptz.
    stamp = now if backend == "postgresql" else now.replace(tzinfo=None)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "conversations",
            columns=("wa_id", "flow", "state", "slots", "updated_at"),
            records=(
                (wa_id(n), "vincular", "pedir_rut", slots, stamp) for n in range(size)
            ),
        )
        await conn.copy_records_to_table(
            "outbox",
            columns=(
                "wa_id",
                "phone_number_id",
                "kind",
                "body",
                "status",
                "next_attempt_at",
                "created_at",
                "updated_at",
                "wamid",
            ),
            records=(
                (wa_id(n), PHONE_NUMBER_ID, "message", reply, "read")
                + (stamp, stamp, stamp, f"w.{n}")
                for n in range(size)
            ),
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def steps(url: str, size: int, events: int) -> float:
    """Run `events` steps on stored phones; return events per second."""
    async with create_store(url) as store:
        # A few steps first, so that connections and plans are warm.
        for n in range(-20, events):
            phone = wa_id((n * 7919) % size)
            if n == 0:
                started = time.perf_counter()
            key = f"wamid.bench.{n}"
            await store.add_events(
                [NewInboxEvent(key, "message", phone, PHONE_NUMBER_ID, {"id": key})]
            )
            event = await store.next_event(phone)
            conversation = await store.load_conversation(phone) or Conversation(phone)
            conversation.state = "confirmar" if conversation.state else "pedir_rut"
            conversation.slots["ultimo"] = key
            reply = NewOutbound(
                phone,
                PHONE_NUMBER_ID,
                "message",
                {"type": "text", "text": {"body": key}},
            )
            await store.commit_step(event.id, conversation, [reply])
            for item in await store.due_outbox(limit=10):
                await store.mark_sent(item.id, f"sent.{item.id}", "accepted")
        return events / (time.perf_counter() - started)


async def run(backends: list[str], sizes: list[int], events: int) -> list[dict]:
    results = []
    with PostgresServer() as server, tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            for backend in backends:
                name = f"b_{backend}_{size}"
                if backend == "sqlite":
                    url, dsn = f"sqlite:///{Path(folder) / name}.db", None
                else:
                    server.create_database(name)
                    dsn = server.dsn_for(name)
                    url = (
                        dsn
                        if backend == "postgresql"
                        else f"odbc:{server.odbc_for(name)}"
                    )
                # Open once so that the schema exists, then bulk-load.
                async with create_store(url):
                    pass
                load = await fill(backend, url, dsn, size)
                rate = await steps(url, size, events)
                results.append(
                    {"backend": backend, "size": size, "load_s": load, "events_s": rate}
                )
                print(
                    f"{backend:10} {size:>9,} stored  load {load:6.1f}s  "
                    f"{rate:7.0f} events/s",
                    flush=True,
                )
                if backend != "sqlite":
                    server.drop_database(name)
    return results


def table(results: list[dict]) -> str:
    lines = [
        "| stored conversations | backend | events/s | vs SQLite |",
        "|---:|---|---:|---:|",
    ]
    base = {r["size"]: r["events_s"] for r in results if r["backend"] == "sqlite"}
    for r in results:
        ratio = r["events_s"] / base[r["size"]] if r["size"] in base else float("nan")
        lines.append(
            f"| {r['size']:,} | {r['backend']} | {r['events_s']:.0f} | {ratio:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args()
    backends = args.backends.split(",")
    if "odbc" in backends and not odbc_driver_installed():
        print("odbc skipped: psqlODBC not installed (scripts/install-system-deps.sh)")
        backends.remove("odbc")
    sizes = [int(s) for s in args.sizes.split(",")]
    results = asyncio.run(run(backends, sizes, args.events))
    print()
    print(table(results))


if __name__ == "__main__":
    main()
