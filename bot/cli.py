"""The `tracbot` command: serve, chat, simulator (and the flow tools)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence

from bot import logs
from bot.config import Settings, load_settings
from bot.errors import TracbotError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logs.setup(args.log_level)
    try:
        return args.run(args) or 0
    except TracbotError as exc:
        print(f"tracbot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracbot",
        description="WhatsApp Cloud API conversation framework.",
    )
    parser.add_argument(
        "--config", default="config.yaml", help="config file (default: config.yaml)"
    )
    parser.add_argument(
        "--log-level", default="INFO", help="DEBUG, INFO, WARNING (default: INFO)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the webhook and the bot")
    serve.add_argument("--host", help="interface to bind (default: from config)")
    serve.add_argument("--port", type=int, help="port (default: from config)")
    serve.set_defaults(run=_serve)

    chat = sub.add_parser("chat", help="talk to the bot as a driver, in a terminal")
    chat.add_argument("phone", help="the driver's number, e.g. +56911112222")
    chat.set_defaults(run=_chat)

    sim = sub.add_parser("simulator", help="run the Graph API simulator")
    sim.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    sim.add_argument("--port", type=int, default=8090, help="default: 8090")
    sim.add_argument("--delay", type=float, default=0.0, help="seconds per answer")
    sim.add_argument("--token", help="bearer token to require (default: any)")
    sim.add_argument("--webhook-url", help="where to post status webhooks")
    sim.add_argument("--app-secret", help="key to sign status webhooks with")
    sim.set_defaults(run=_simulator)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def _serve(args: argparse.Namespace) -> int:
    from bot.serve import serve

    settings = _settings(args)
    asyncio.run(serve(settings, host=args.host, port=args.port))
    return 0


def _chat(args: argparse.Namespace) -> int:
    from bot.chat import chat

    settings = _settings(args)
    with contextlib.suppress(EOFError):
        return asyncio.run(chat(settings, args.phone))
    return 0


def _simulator(args: argparse.Namespace) -> int:
    from bot.whatsapp import simulator

    simulator.main(
        args.host,
        args.port,
        delay=args.delay,
        token=args.token,
        webhook_url=args.webhook_url,
        app_secret=args.app_secret,
    )
    return 0
