"""The ceiling of the load generator: an aiohttp handler that only says 200.

It reads the body and answers, nothing else; any server that does real work
can at best match it. Run as `python -m bench.bare --port N`.
"""

from __future__ import annotations

import argparse

from aiohttp import web


async def webhook(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    app = web.Application(client_max_size=4 * 1024**2)
    app.router.add_post("/webhook", webhook)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
