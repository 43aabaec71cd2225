"""`tracbot chat`: talk to the bot as a driver from a terminal.

Each line typed becomes a signed webhook POST to a tracbot started in this
process, so it runs through the real webhook, inbox, engine, outbox and
sender; the replies its own in-process Graph API simulator accepted are
printed as the driver would read them. Chat never reaches the configured
Graph API, whatever the token: it is for trying flows, not for messaging.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bot.app import RUNTIME, create_app
from bot.config import Settings, answering
from bot.console import describe
from bot.whatsapp.client import SendResult
from bot.whatsapp.signature import sign
from storage.base import OutboxItem
from storage.sqlite import copy_if_in_use

PROMPT = "tú> "
WAIT_SECONDS = 15.0
PIN_HINT = (
    "(para compartir una ubicación escribe 📍 y sus coordenadas con punto "
    "decimal, por ejemplo: 📍 -23.65, -70.40)"
)
# A pin typed as 📍 and its latitude and longitude.
_PIN = re.compile(
    r"📍\s*(?P<latitude>-?\d+(?:\.\d+)?)\s*[,\s]\s*(?P<longitude>-?\d+(?:\.\d+)?)"
)


@dataclass(frozen=True, slots=True)
class Choice:
    """A button or a list row a reply offered: how a tap on it is sent."""

    kind: str  # button_reply or list_reply
    id: str
    title: str


async def chat(settings: Settings, phone: str) -> int:
    """Run the chat loop until end of input; return the exit status."""
    wa_id = "".join(ch for ch in phone if ch.isdigit())
    if len(wa_id) < 8:
        print(f"tracbot chat: {phone!r} is not a phone number", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="tracbot-chat-") as scratch:
        return await _chat(offline(settings, Path(scratch)), phone, wa_id)


def _beside_server(settings: Settings, scratch: Path) -> Settings:
    """`settings` on a copy of the database if a server has it open."""
    if not settings.storage_url.startswith("sqlite:"):
        return settings
    copy = copy_if_in_use(settings.storage_url, scratch)
    if copy is None:
        return settings
    print(
        "(otro tracbot, la demo u otro chat, usa la misma base de datos: este "
        "chat usa una copia, y lo que cambie aquí no queda en ella)",
        flush=True,
    )
    return dataclasses.replace(settings, storage_url=copy)


async def _chat(settings: Settings, phone: str, wa_id: str) -> int:
    replies: asyncio.Queue[str] = asyncio.Queue()
    # The buttons or list rows of the last reply that had them: a line
    # written as one is shown (`[Sí, soy yo]`) is a tap on it.
    offered: list[Choice] = []

    def on_sent(item: OutboxItem, result: SendResult | None) -> None:
        if item.kind == "message" and item.wa_id == wa_id:
            replies.put_nowait(describe(item.body))
            choices = choices_of(item.body)
            if choices is not None:
                offered[:] = choices

    app = create_app(settings, on_sent=on_sent)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/webhook"
    # Everything that prints runs inside the `try`: a reader gone away
    # (`| head -1`) must still let the app stop, or its processing thread
    # kept the process alive.
    try:
        print(
            "Chat de prueba: responde el simulador local, nada se envía a "
            f"WhatsApp.\nEscribe como el conductor {phone} (Ctrl-D para salir). "
            "Toca un botón o una fila escribiéndolo como se muestra, entre "
            "corchetes ([Sí, soy yo]); comparte una ubicación con 📍 y sus "
            "coordenadas (📍 -23.65, -70.40).",
            flush=True,
        )
        async with aiohttp.ClientSession() as session:
            while (line := await _read_line()) is not None:
                message = typed_message(line, offered)
                if message is None:
                    # Meant as a pin, not written as one: sent as text it
                    # got "No entendí", and the pin was never tried.
                    print(PIN_HINT, flush=True)
                    continue
                await _post(session, url, settings, wa_id, message)
                await _print_replies(app, wa_id, replies)
    finally:
        await runner.cleanup()
    return 0


def offline(settings: Settings, scratch: Path) -> Settings:
    """`settings` without an access token: the bot then runs in demo mode,
    its replies answered by the simulator in this process, never by Meta.

    A deployment's settings (a token was set) also get a scratch outbox,
    so that chat's sender never drains messages queued for real drivers;
    so does a server database whatever the token (a shell without it, beside
    a service that has it: chat's sender took the service's queued alerts
    and "sent" them to its simulator); the demo's SQLite file, a copy while
    `tracbot serve` has it open.
    """
    storage_url = settings.storage_url
    if not settings.demo or not storage_url.startswith("sqlite:"):
        storage_url = f"sqlite:///{scratch / 'chat.db'}"
    whatsapp = dataclasses.replace(settings.whatsapp, access_token=None)
    settings = answering(settings)
    settings = dataclasses.replace(settings, whatsapp=whatsapp, storage_url=storage_url)
    return _beside_server(settings, scratch)


async def _read_line() -> str | None:
    loop = asyncio.get_running_loop()
    print(PROMPT, end="", flush=True)
    line = await loop.run_in_executor(None, sys.stdin.readline)
    return line.rstrip("\n") if line else None


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    settings: Settings,
    wa_id: str,
    message: dict[str, Any],
) -> None:
    body = json.dumps(_webhook(settings, wa_id, message)).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": sign(settings.whatsapp.app_secret, body),
    }
    async with session.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            print(f"(webhook answered {response.status})", flush=True)


def choices_of(body: dict[str, Any]) -> list[Choice] | None:
    """The buttons or list rows a message offers; None if it is not one that
    offers a choice (a text leaves the last choices standing)."""
    if body.get("type") != "interactive":
        return None
    interactive = body.get("interactive") or {}
    action = interactive.get("action") or {}
    if interactive.get("type") == "button":
        return [
            Choice("button_reply", str(b["reply"]["id"]), str(b["reply"]["title"]))
            for b in action.get("buttons", [])
        ]
    if interactive.get("type") == "list":
        return [
            Choice("list_reply", str(row["id"]), str(row["title"]))
            for section in action.get("sections", [])
            for row in section.get("rows", [])
        ]
    return []


def typed_message(line: str, offered: list[Choice]) -> dict[str, Any] | None:
    """The message a chat line stands for: a tap on a choice written as it
    is shown (`[Sí, soy yo]`), a pin (`📍 -23.65, -70.40`), or a text; None
    for a line meant as a pin that is not one (`[📍 Enviar ubicación]`)."""
    written = line.strip()
    if written.startswith("[") and written.endswith("]"):
        title = written[1:-1].strip().casefold()
        for choice in offered:
            if choice.title.casefold() == title:
                reply = {"id": choice.id, "title": choice.title}
                return {
                    "type": "interactive",
                    "interactive": {"type": choice.kind, choice.kind: reply},
                }
    pin = _PIN.fullmatch(written)
    if pin:
        return {
            "type": "location",
            "location": {
                "latitude": float(pin["latitude"]),
                "longitude": float(pin["longitude"]),
            },
        }
    if written.startswith(("📍", "[📍")):
        return None
    return {"type": "text", "text": {"body": line}}


def _webhook(settings: Settings, wa_id: str, message: dict[str, Any] | str) -> dict:
    if isinstance(message, str):
        message = {"type": "text", "text": {"body": message}}
    now = time.time()
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": settings.whatsapp.business_account_id or "0",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "56220000000",
                                "phone_number_id": settings.whatsapp.phone_number_id,
                            },
                            "contacts": [{"profile": {"name": "Chat"}, "wa_id": wa_id}],
                            "messages": [
                                {
                                    "from": wa_id,
                                    "id": f"wamid.chat.{wa_id}.{now:.6f}",
                                    "timestamp": str(int(now)),
                                    **message,
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }


async def _print_replies(
    app: web.Application, wa_id: str, replies: asyncio.Queue[str]
) -> None:
    """Wait until the message is handled and its replies sent, then print."""
    store = app[RUNTIME].store
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        pending = await store.pending_count()
        queued = [
            i
            for i in await store.outbox_items(wa_id)
            if i.status in ("queued", "sending")
        ]
        if pending == 0 and not queued:
            break
        await asyncio.sleep(0.05)
    else:
        print("(sin respuesta todavía)", flush=True)

    while not replies.empty():
        text = replies.get_nowait().replace("\n", "\n     ")
        print(f"bot> {text}", flush=True)
