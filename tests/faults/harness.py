"""A real `tracbot serve` and a real simulator, as subprocesses, for faults.

`Stack` runs both on 127.0.0.1 in one folder (config copy, SQLite file,
logs), posts signed webhooks, reads what reached the simulator and what the
database holds, and kills or restarts the server as a fault would.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench import procs
from bench.webhooks import phone, signature, text_webhook, wamid

# `python -m bench --faults` runs this suite with TRACBOT_FAULTS_SCALE=10:
# ten times the messages, and waits long enough for leases to expire.
SCALE = int(os.environ.get("TRACBOT_FAULTS_SCALE", "1"))
FULL = SCALE > 1


class Stack:
    """A simulator and a tracbot server sharing one folder."""

    def __init__(
        self,
        folder: Path,
        *,
        overrides: dict[str, Any] | None = None,
        storage_url: str | None = None,
        statuses: bool = False,
        graph_delay: float = 0.0,
    ) -> None:
        self.folder = folder
        self.overrides = {"engine.poll_seconds": 0.2, **(overrides or {})}
        self.database = folder / "tracbot.db"
        self.storage_url = storage_url or f"sqlite:///{self.database}"
        self.bot: procs.Proc | None = None
        self.port = procs.free_port()
        # With `statuses`, its status webhooks come back, retried while the
        # server is down, as Meta's are; tests that post their own, without.
        hook = f"{self.url}/webhook" if statuses else None
        self.sim = procs.simulator(delay=graph_delay, log_dir=folder, webhook_url=hook)

    def start(self) -> Stack:
        self.sim.start()
        self.start_bot()
        return self

    def start_bot(self) -> None:
        """Start (or start again) the server, on the same port and database."""
        self.bot = procs.tracbot(
            self.sim.url,
            self.storage_url,
            self.folder,
            overrides=self.overrides,
            port=self.port,
        ).start()

    def stop(self) -> None:
        if self.bot is not None:
            self.bot.stop()
        self.sim.stop()

    @property
    def url(self) -> str:
        return f"http://{procs.HOST}:{self.port}"

    def log(self) -> str:
        assert self.bot is not None
        return self.bot.log_tail(4000)

    # Webhooks in

    async def post(
        self,
        session: aiohttp.ClientSession,
        body: bytes,
        *,
        secret: str | None = procs.APP_SECRET,
    ) -> int | str:
        """POST a body, signed unless `secret` is None; return the status."""
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Hub-Signature-256"] = signature(secret, body)
        try:
            async with session.post(
                f"{self.url}/webhook", data=body, headers=headers
            ) as response:
                await response.read()
                return response.status
        except aiohttp.ClientError as exc:
            return type(exc).__name__

    # What came out

    async def sim_requests(self, session: aiohttp.ClientSession) -> list[dict]:
        async with session.get(f"{self.sim.url}/_sim/messages") as response:
            return await response.json()

    async def sim_control(
        self, session: aiohttp.ClientSession, action: str, data: dict
    ) -> None:
        async with session.post(f"{self.sim.url}/_sim/{action}", json=data) as r:
            assert r.status == 200, await r.text()

    def outbox(self) -> list[dict[str, Any]]:
        """Every outbox row, read straight from the database file."""
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute("SELECT * FROM outbox")]


def text_body(run: str, index: int, phones: int, text: str = "AYUDA") -> bytes:
    """The index-th message of a run, from phone `index % phones`."""
    return text_webhook(
        phone(index % phones),
        wamid(run, index),
        text,
        procs.PHONE_NUMBER_ID,
        1780318800 + index,
    )


def replies(requests: list[dict]) -> list[dict]:
    """Message sends the simulator accepted (read marks excluded)."""
    return [
        r
        for r in requests
        if r["wamid"] is not None and (r["body"] or {}).get("status") != "read"
    ]


def replies_per_phone(requests: list[dict]) -> Counter[str]:
    return Counter(r["body"]["to"] for r in replies(requests))


def reads_per_wamid(requests: list[dict]) -> Counter[str]:
    return Counter(
        r["body"]["message_id"]
        for r in requests
        if r["status"] == 200 and (r["body"] or {}).get("status") == "read"
    )


async def wait_for(
    session: aiohttp.ClientSession,
    stack: Stack,
    check: Any,
    timeout: float = 30.0,  # noqa: ASYNC109 - a plain timeout reads best in tests
) -> list[dict]:
    """Poll the simulator until `check(requests)` is true; return them."""
    deadline = time.monotonic() + timeout
    while True:
        requests = await stack.sim_requests(session)
        if check(requests):
            return requests
        if time.monotonic() > deadline:
            counts = json.dumps(replies_per_phone(requests).most_common(3))
            outbox = Counter(row["status"] for row in stack.outbox())
            raise AssertionError(
                f"timed out; {len(replies(requests))} replies, top {counts}, "
                f"outbox {dict(outbox)}\nserver log:\n{stack.log()}"
            )
        await asyncio.sleep(0.1)
