"""Helpers shared by the tests: settings, signed posts, waiting for quiet."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from pathlib import Path

from bot.app import RUNTIME, Runtime
from bot.chat import _webhook
from bot.config import Settings, load_settings
from bot.whatsapp.signature import sign

ROOT = Path(__file__).resolve().parent.parent


class LogLines(logging.Handler):
    """The messages of the records handed to it, each once: added to a
    tracbot logger, it hears them whether or not that logger propagates."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


WEBHOOKS = ROOT.parent / "shared" / "webhooks"
APP_SECRET = "test-app-secret"
VERIFY_TOKEN = "test-verify-token"


def corpus(name: str) -> bytes:
    """The exact bytes of a body from shared/webhooks/."""
    return (WEBHOOKS / name).read_bytes()


def demo_settings(tmp_path: Path, **env: str) -> Settings:
    """Demo-mode settings (in-process simulator) on a fresh SQLite file."""
    values = {
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_WEBHOOK_VERIFY_TOKEN": VERIFY_TOKEN,
        "TRACBOT_STORAGE_URL": f"sqlite:///{tmp_path}/tracbot.db",
        **env,
    }
    settings = load_settings(ROOT / "config.yaml", env=values)
    # A fresh business database too (built from demo/business.yaml), since
    # flows write to it (locations, arrivals).
    business = dict(settings.raw.get("business") or {})
    business["url"] = f"sqlite:///{tmp_path}/business.db"
    return dataclasses.replace(settings, raw={**settings.raw, "business": business})


def signed_headers(body: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": sign(secret, body),
    }


async def settle(runtime: Runtime, seconds: float = 10.0) -> None:
    """Wait until the inbox is processed and the outbox is drained."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pending = await runtime.store.pending_count()
        busy = [
            item
            for item in await runtime.store.outbox_items()
            if item.status in ("queued", "sending")
        ]
        if pending == 0 and not busy:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"not settled: pending={pending} outbox busy={len(busy)}")


async def driver_says(  # type: ignore[no-untyped-def]
    client, wa_id: str, text: str, secret: str | None = None
) -> int:
    """Post one signed text webhook from `wa_id` to the app; return the status."""
    settings = runtime_of(client).settings
    body = json.dumps(_webhook(settings, wa_id, text)).encode()
    headers = signed_headers(body, secret or settings.whatsapp.app_secret)
    response = await client.post("/webhook", data=body, headers=headers)
    return response.status


def runtime_of(client) -> Runtime:  # type: ignore[no-untyped-def]
    return client.server.app[RUNTIME]


def sent_texts(runtime: Runtime, wa_id: str | None = None) -> list[str]:
    """Texts the Graph API simulator received, in order: text bodies and the
    body text of interactive messages (buttons, lists, location requests)."""
    assert runtime.simulator is not None
    texts = []
    for request in runtime.simulator.received:
        body = request["body"] or {}
        if request["status"] != 200 or body.get("type") not in TEXT_TYPES:
            continue
        if wa_id is None or body.get("to") == wa_id:
            texts.append(_text_of(body))
    return texts


TEXT_TYPES = ("text", "interactive")


def _text_of(body: dict) -> str:
    if body["type"] == "interactive":
        return body["interactive"]["body"]["text"]
    return body["text"]["body"]
