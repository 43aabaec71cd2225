"""pywa as a peer bot: one text reply to every text message, as pywa runs it.

pywa's async client (`pywa_async`) on its own server (Starlette under
uvicorn, the `pywa[server]` extra), validating `X-Hub-Signature-256` with the
app secret. That server answers 200 first and runs the handlers after, as a
background task, so a reply that fails is lost after Meta was told "ok".

pywa has no base-URL setting: it sends to graph.facebook.com. Its httpx
client gets a transport that rewrites every request's origin to the
simulator on 127.0.0.1 before any connection (or DNS look-up) is made,
keeping the path (`/v{pywa's Graph version}/{phone_number_id}/messages`).
The client keeps httpx's defaults otherwise (100 connections, 5 s timeouts),
as a pywa user who passes no session gets.

pywa 4.5 needs the BSUID (`contacts[].user_id`) in every message webhook
(it raises KeyError without one: pywa issue #227), so this row's load sends
the 2026 shape that carries it (bench/load.py `--bsuid`). Run as
`python -m bench.pywa_peer --port N --graph-url URL --token T --secret S`.
"""

from __future__ import annotations

import argparse

import httpx
from pywa_async import WhatsApp, filters, types
from pywa_async.utils import UserIdentifier

from bench.procs import HOST, VERIFY_TOKEN
from bench.reference import REPLY


class LoopbackTransport(httpx.AsyncBaseTransport):
    """Sends every request to one origin on 127.0.0.1, path and query kept."""

    def __init__(self, origin: str) -> None:
        url = httpx.URL(origin)
        if url.host != HOST:
            raise ValueError(f"Graph URL must be on {HOST}, got {origin!r}")
        self.origin = url
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(
            scheme=self.origin.scheme, host=self.origin.host, port=self.origin.port
        )
        request.headers["Host"] = self.origin.netloc.decode("ascii")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def answer(_: WhatsApp, message: types.Message) -> None:
    """The one reply of the bench, to whoever wrote."""
    await message.reply(REPLY)


def build(graph_url: str, token: str, secret: str) -> WhatsApp:
    """The pywa client with its webhook route and the text handler."""
    session = httpx.AsyncClient(transport=LoopbackTransport(graph_url))
    wa = WhatsApp(
        token=token,
        session=session,
        verify_token=VERIFY_TOKEN,
        app_secret=secret,
        webhook_endpoint="/webhook",
        # Reply to the wa_id, as the other rows do: the simulator knows `to`,
        # not the BSUID `recipient` that pywa prefers by default.
        user_identifier_priority=(
            UserIdentifier.WA_ID,
            UserIdentifier.BSUID,
            UserIdentifier.PARENT_BSUID,
        ),
    )
    wa.on_message(filters.text)(answer)
    return wa


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pywa_peer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--graph-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()

    wa = build(args.graph_url, args.token, args.secret)
    # At INFO pywa logs a line per update; the other rows log at WARNING.
    wa.run(host=HOST, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
