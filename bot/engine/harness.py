"""A whole tracbot on loopback, driven the way Meta drives it.

`Harness` starts the real application (webhook, inbox, dispatcher, engine,
outbox, sender) on 127.0.0.1 with a fresh SQLite file and the in-process
Graph API simulator, posts signed webhook bodies built from short
descriptions (`hola`, a location, a button id) and returns the messages the
simulator received in answer. Conversation tests and `tracbot test` use it;
nothing in it calls the engine directly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bot.app import RUNTIME, Runtime, create_app
from bot.config import Settings, answering, load_settings
from bot.engine.engine import Engine
from bot.engine.timeouts import sweep_once
from bot.whatsapp.signature import sign
from storage.base import Conversation

WAIT_SECONDS = 10.0
# Variables that would point a test at a real account, a real Graph API or a
# shared database; a harness always runs in demo mode on its own file.
_ISOLATE = ("WHATSAPP_API_TOKEN", "WHATSAPP_API_BASE_URL", "TRACBOT_STORAGE_URL")
MEDIA_TYPES = ("image", "audio", "voice", "video", "document", "sticker")
SEND_KINDS = ("text", "location", "button", "list", "quick_reply", "media")
# What a `send` mapping may carry beside its kind.
SEND_EXTRAS = frozenset({"title", "caption"})


def demo_settings(config: str | Path, workdir: Path) -> Settings:
    """Settings of `config` in demo mode, storing in a file under `workdir`."""
    env = {k: v for k, v in os.environ.items() if k not in _ISOLATE}
    settings = answering(load_settings(config, env=env))
    url = f"sqlite:///{(workdir / 'convtest.db').resolve()}"
    # The business data too, built fresh from its fixture: a case may store
    # a location or confirm an arrival, and the next case must not see it.
    business = dict(settings.raw.get("business") or {})
    business["url"] = f"sqlite:///{(workdir / 'business.db').resolve()}"
    raw = {**settings.raw, "business": business}
    return dataclasses.replace(settings, storage_url=url, raw=raw)


class Harness:
    """A running tracbot; use as `async with Harness(settings, engine) as h`."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.app = create_app(settings, engine=engine)
        self.runner = web.AppRunner(self.app)
        self.url = ""
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self._seen = 0

    @property
    def runtime(self) -> Runtime:
        return self.app[RUNTIME]

    async def __aenter__(self) -> Harness:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/webhook"
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
        await self.runner.cleanup()

    async def send(self, wa_id: str, what: Any, name: str = "Conductor") -> list[dict]:
        """Post one message from `wa_id`; return the message bodies sent back."""
        message = build_message(wa_id, what, f"wamid.convtest.{next(self._ids)}")
        body = json.dumps(self._envelope(wa_id, name, message)).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": sign(self.settings.whatsapp.app_secret, body),
        }
        assert self._session is not None, "use the harness in `async with`"
        async with self._session.post(self.url, data=body, headers=headers) as resp:
            if resp.status != 200:
                raise AssertionError(f"the webhook answered {resp.status}")
        return await self.replies(wa_id)

    async def expire(self, wa_id: str) -> list[dict]:
        """Let the phone's stored deadline pass; return the replies it caused."""
        conversation = await self.conversation(wa_id)
        if conversation is None or conversation.deadline is None:
            flow = conversation.flow if conversation else None
            raise AssertionError(
                "nothing to expire: the conversation waits for no time "
                + (
                    f"(flow {flow!r} has no `timeout:`)"
                    if flow
                    else "(no flow is open)"
                )
            )
        runtime = self.runtime
        now = conversation.deadline + timedelta(seconds=1)
        await sweep_once(runtime.store, now, self.settings.whatsapp.phone_number_id)
        runtime.wake_dispatcher()
        return await self.replies(wa_id)

    async def conversation(self, wa_id: str) -> Conversation | None:
        """The stored conversation of a phone."""
        return await self.runtime.store.load_conversation(wa_id)

    async def replies(self, wa_id: str) -> list[dict]:
        """Wait until nothing is pending, then return the new sends to `wa_id`."""
        store = self.runtime.store
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            # Inbox first: a step committed between the two reads then shows
            # its replies as busy, instead of slipping between them.
            pending = await store.pending_count()
            items = await store.outbox_items(wa_id)
            busy = [i for i in items if i.status in ("queued", "sending")]
            if not busy and pending == 0:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"no answer within {WAIT_SECONDS:.0f}s")

        simulator = self.runtime.simulator
        assert simulator is not None, "the harness runs in demo mode"
        received = simulator.received[self._seen :]
        self._seen = len(simulator.received)
        return [
            r["body"]
            for r in received
            if r["body"] and r["body"].get("to") == wa_id and "type" in r["body"]
        ]

    def _envelope(self, wa_id: str, name: str, message: dict) -> dict:
        whatsapp = self.settings.whatsapp
        value = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": "56220000000",
                "phone_number_id": whatsapp.phone_number_id,
            },
            "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
            "messages": [message],
        }
        change = {"field": "messages", "value": value}
        entry = {"id": whatsapp.business_account_id or "0", "changes": [change]}
        return {"object": "whatsapp_business_account", "entry": [entry]}


def build_message(wa_id: str, what: Any, wamid: str) -> dict:
    """A webhook `messages[]` item from a short description.

    `what` is a text, or a mapping with one of: `text`, `location`
    (latitude, longitude, name, address), `button` (id; `title`), `list`
    (id; `title`), `quick_reply` (payload; `text`), `media` (image, audio,
    voice, video, document or sticker; `caption`).
    """
    base = {"from": wa_id, "id": wamid, "timestamp": str(int(time.time()))}
    if isinstance(what, str | int | float):
        return {**base, "type": "text", "text": {"body": str(what)}}
    if not isinstance(what, Mapping):
        raise ValueError(f"cannot send {what!r}")
    kinds = [k for k in SEND_KINDS if k in what]
    if "quick_reply" in kinds and "text" in kinds:
        # `text` is the quick reply's label here, not a message of its own.
        kinds.remove("text")
    if len(kinds) != 1:
        raise ValueError(f"send needs exactly one of {', '.join(SEND_KINDS)}")
    return {**base, **_content(kinds[0], what)}


def _content(kind: str, what: Mapping[str, Any]) -> dict:
    value = what[kind]
    if kind == "text":
        return {"type": "text", "text": {"body": str(value)}}
    if kind == "location":
        pin = dict(value) if isinstance(value, Mapping) else {}
        for axis in ("latitude", "longitude"):
            # Meta sends numbers; `latitude: abc` tested nothing the bot can
            # be sent (a number out of range is a fair test: it can be).
            number = pin.get(axis)
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise ValueError(f"a location needs a number for {axis}")
        return {"type": "location", "location": pin}
    if kind in ("button", "list"):
        reply_kind = "button_reply" if kind == "button" else "list_reply"
        reply = {"id": str(value), "title": str(what.get("title", value))}
        return {
            "type": "interactive",
            "interactive": {"type": reply_kind, reply_kind: reply},
        }
    if kind == "quick_reply":
        text = str(what.get("text", value))
        return {"type": "button", "button": {"payload": str(value), "text": text}}
    return _media(str(value), what.get("caption"))


def _media(kind: str, caption: Any) -> dict:
    if kind not in MEDIA_TYPES:
        raise ValueError(f"media must be one of {', '.join(MEDIA_TYPES)}")
    wire = "audio" if kind == "voice" else kind
    body: dict[str, Any] = {
        "id": f"media.convtest.{kind}",
        "mime_type": "audio/ogg; codecs=opus" if wire == "audio" else "image/jpeg",
        "sha256": "0" * 64,
    }
    if kind == "voice":
        body["voice"] = True
    if caption is not None:
        body["caption"] = str(caption)
    return {"type": wire, wire: body}
