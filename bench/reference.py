"""The hand-written reference bot: what a careful developer writes in a day.

Signature check, JSON parse, one text reply per message through one shared
aiohttp session, and the 200 once the replies were sent. No storage: a
crash, a Graph API error or a slow Graph API loses or delays the reply, and
Meta's retry after a slow answer produces a duplicate. Run as
`python -m bench.reference --port N --graph-url URL --token T --secret S`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

REPLY = "Hola, recibimos tu mensaje. Escribe AYUDA para ver los comandos."
SESSION = web.AppKey("session", aiohttp.ClientSession)


class Bot:
    def __init__(self, graph_url: str, token: str, secret: str) -> None:
        self.graph_url = graph_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.secret = secret.encode()

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        given = request.headers.get("X-Hub-Signature-256", "")
        digest = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given, f"sha256={digest}"):
            return web.Response(status=401)

        try:
            data = json.loads(body)
        except ValueError:
            return web.Response(text="ok")
        session = request.app[SESSION]
        await asyncio.gather(*(self.reply(session, m) for m in messages(data)))
        return web.Response(text="ok")

    async def reply(self, session: aiohttp.ClientSession, message: tuple) -> None:
        phone_number_id, wa_id = message
        url = f"{self.graph_url}/v23.0/{phone_number_id}/messages"
        payload = {
            "messaging_product": "whatsapp",
            "to": wa_id,
            "type": "text",
            "text": {"body": REPLY},
        }
        async with session.post(url, json=payload, headers=self.headers) as response:
            await response.read()


def messages(data: object) -> list[tuple[str, str]]:
    """(phone_number_id, wa_id) of every inbound message of a body."""
    found = []
    entries = data.get("entry", []) if isinstance(data, dict) else []
    for entry in entries:
        for change in entry.get("changes", []):
            value = change.get("value", {})
            number = value.get("metadata", {}).get("phone_number_id")
            for message in value.get("messages", []):
                found.append((number, message["from"]))
    return found


async def session_ctx(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        app[SESSION] = session
        yield


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reference")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--graph-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument(
        "--uvloop", action="store_true", help="run on uvloop, as tracbot does"
    )
    args = parser.parse_args()

    bot = Bot(args.graph_url, args.token, args.secret)
    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/webhook", bot.webhook)
    loop = None
    if args.uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        loop=loop,
    )


if __name__ == "__main__":
    main()
