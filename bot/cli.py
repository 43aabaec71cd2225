"""The `tracbot` command: serve, chat, simulator (and the flow tools)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

from bot import logs
from bot.config import Settings, load_settings
from bot.errors import FlowError, TracbotError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Meta sends a webhook again for up to 7 days (CLOUD_API.md §3): inbox rows
# must outlive that, with a day to spare, to recognise one already handled.
MIN_PRUNE_DAYS = 8


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    # Chat prints a conversation and test a report: only warnings may
    # interrupt them (a test run logged ~200 INFO lines a file), unless a
    # level was asked for.
    default = "WARNING" if args.command in ("chat", "test") else "INFO"
    logs.setup(args.log_level or default)
    try:
        return args.run(args) or 0
    except TracbotError as exc:
        print(f"tracbot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Whoever read our output went away (`tracbot chat | head`): nothing
        # is left to say, and Python's own flush at exit must not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _port(text: str) -> int:
    # 99999 was announced as the address, and the server took another.
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is from 1 to 65535, got {port}")
    return port


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line that says what is wrong, like every other tracbot error.
        self.exit(2, f"tracbot: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tracbot",
        description="WhatsApp Cloud API conversation framework.",
    )
    parser.add_argument(
        "--config", default="config.yaml", help="config file (default: config.yaml)"
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        help="DEBUG, INFO, WARNING, ERROR (default: INFO; WARNING for chat, test)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the webhook and the bot")
    serve.add_argument("--host", help="interface to bind (default: from config)")
    serve.add_argument("--port", type=_port, help="port (default: from config)")
    serve.add_argument(
        "--simulator-port",
        type=_port,
        help="demo mode: the port of the built-in Graph API simulator on "
        "127.0.0.1 (default: any free one, printed in the log)",
    )
    serve.set_defaults(run=_serve)

    migrate = sub.add_parser(
        "migrate", help="create or upgrade the storage database schema"
    )
    migrate.set_defaults(run=_migrate)

    prune = sub.add_parser(
        "prune",
        help="delete handled messages and logs older than some days",
        description="Delete what is finished and older than DAYS days: handled "
        "inbox events, sent or failed messages with their attempts, linking "
        "attempts and kept Idempotency-Key answers. Never a pending message, "
        "a queued one, a conversation or a link. History and metrics lose "
        "what is deleted. Safe beside a running server.",
    )
    prune.add_argument(
        "--days",
        type=_days,
        required=True,
        help=f"keep the last DAYS days (at least {MIN_PRUNE_DAYS}: Meta sends a "
        "webhook again for 7 days, and a handled one is recognised by its row)",
    )
    prune.set_defaults(run=_prune)

    chat = sub.add_parser(
        "chat",
        help="talk to the bot as a driver, in a terminal",
        description="Talk to the bot as a driver. Chat runs its own bot with "
        "its own in-process Graph API simulator: it never sends a real "
        "WhatsApp message, whatever WHATSAPP_API_TOKEN and "
        "WHATSAPP_API_BASE_URL say.",
    )
    chat.add_argument("phone", help="the driver's number, e.g. +56911112222")
    chat.set_defaults(run=_chat)

    _flow_tools(sub)

    sim = sub.add_parser("simulator", help="run the Graph API simulator")
    sim.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    sim.add_argument("--port", type=_port, default=8090, help="default: 8090")
    sim.add_argument("--delay", type=float, default=0.0, help="seconds per answer")
    sim.add_argument("--token", help="bearer token to require (default: any)")
    sim.add_argument("--webhook-url", help="where to post status webhooks")
    sim.add_argument("--app-secret", help="key to sign status webhooks with")
    sim.add_argument(
        "--webhook-retry",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long a status webhook that failed is posted again, as Meta "
        "does (default: 60; 0: never)",
    )
    sim.set_defaults(run=_simulator)
    return parser


def _flow_tools(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser(
        "check",
        help="validate every flow and template",
        description="Validate every flow and template (flows refer to each "
        "other, so all are read); with files named, show their problems and "
        "count the others.",
    )
    check.add_argument("files", nargs="*", help="flow or template files to show")
    check.set_defaults(run=_check)

    graph = sub.add_parser("graph", help="print a flow as a Mermaid diagram")
    graph.add_argument("flow", nargs="?", help="the flow's name")
    graph.add_argument("--all", metavar="DIR", help="write one .mmd file per flow")
    graph.set_defaults(run=_graph)

    test = sub.add_parser("test", help="run the conversation tests")
    test.add_argument(
        "files", nargs="*", help="test files (default: tests/conversations/*.yaml)"
    )
    test.set_defaults(run=_test)


def _settings(args: argparse.Namespace, *, serving: bool = False) -> Settings:
    # Only `serve` talks to Meta and needs every secret (bot.config).
    return load_settings(args.config, serving=serving)


def _serve(args: argparse.Namespace) -> int:
    from bot import loops
    from bot.serve import serve
    from storage.errors import StorageError

    settings = _settings(args, serving=True)
    if args.simulator_port is not None:
        if not settings.demo:
            # Chat and tests have one; a server with a token talks to Meta.
            print(
                "tracbot: --simulator-port is for demo mode (WHATSAPP_API_TOKEN "
                "unset); point WHATSAPP_API_BASE_URL at `tracbot simulator` "
                "instead",
                file=sys.stderr,
            )
            return 2
        server = dataclasses.replace(
            settings.server, simulator_port=args.simulator_port
        )
        settings = dataclasses.replace(settings, server=server)
    try:
        loops.run(
            serve(settings, host=args.host, port=args.port),
            settings.server.event_loop,
        )
    except StorageError as exc:
        # An unreachable database or a schema `tracbot migrate` must
        # upgrade first (storage.migrate: refuse): a message, no traceback.
        print(f"tracbot: storage: {exc}", file=sys.stderr)
        return 2
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from storage import migrate
    from storage.errors import StorageError

    settings = _settings(args)
    options = settings.storage.options()
    try:
        applied = asyncio.run(migrate(settings.storage_url, **options))
    except StorageError as exc:
        print(f"tracbot migrate: {exc}", file=sys.stderr)
        return 1
    backend = settings.storage_url.split(":", 1)[0]
    if applied:
        print(f"{backend}: applied {', '.join(applied)}")
    else:
        print(f"{backend}: schema up to date")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from storage import create_store
    from storage.base import utcnow
    from storage.errors import StorageError
    from storage.sqlite import path_of

    settings = _settings(args)
    before = utcnow() - timedelta(days=args.days)
    if settings.storage_url.startswith("sqlite:"):
        path = Path(path_of(settings.storage_url))
        if not path.is_file():
            # Opening it would create an empty database, and report nothing
            # deleted from a file the server never used.
            print(f"tracbot prune: no database at {path}", file=sys.stderr)
            return 1

    async def prune() -> dict[str, int]:
        async with create_store(
            settings.storage_url, **settings.storage.options()
        ) as store:
            return await store.prune(before)

    try:
        deleted = asyncio.run(prune())
    except StorageError as exc:
        print(f"tracbot prune: {exc}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{table} {count:,}" for table, count in deleted.items())
    print(f"deleted rows older than {before:%Y-%m-%d %H:%M} UTC: {counts}")
    if settings.storage_url.startswith("sqlite:") and any(deleted.values()):
        # Freed pages are reused by new rows; the file itself keeps its size.
        print("the SQLite file reuses the freed space; it does not shrink")
    return 0


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if days < MIN_PRUNE_DAYS:
        raise argparse.ArgumentTypeError(
            f"keep at least {MIN_PRUNE_DAYS} days: Meta sends a webhook again for "
            "7 days, and a handled one is recognised by its row"
        )
    return days


def _chat(args: argparse.Namespace) -> int:
    from bot.chat import chat
    from storage.errors import StorageError

    settings = _settings(args)
    # A chat on flows `serve` would refuse answered drivers with the apology
    # (or the wrong flow), unlike the server it stands in for.
    if _refused(settings, "chat"):
        return 1
    try:
        with contextlib.suppress(EOFError):
            return asyncio.run(chat(settings, args.phone))
    except StorageError as exc:
        # As serve says it (storage.migrate: refuse on an old schema, a
        # database that cannot be reached), not as a traceback.
        print(f"tracbot chat: storage: {exc}", file=sys.stderr)
        return 2
    return 0


def _refused(settings: Settings, command: str) -> bool:
    """Print the checker's report and say so when `serve` would refuse the
    flows; return whether it would."""
    from bot.engine.check import check_project, format_problems

    problems = check_project(settings.engine.flows_dir, settings.engine.templates_dir)
    if problems:
        print(format_problems(problems), file=sys.stderr)
        print(
            f"tracbot {command}: fix these first (serve refuses them)", file=sys.stderr
        )
    return bool(problems)


def _simulator(args: argparse.Namespace) -> int:
    from bot.whatsapp import simulator

    simulator.main(
        args.host,
        args.port,
        delay=args.delay,
        token=args.token,
        webhook_url=args.webhook_url,
        app_secret=args.app_secret,
        webhook_retry_seconds=args.webhook_retry,
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    from bot.engine.check import check_project, format_problems

    engine = _settings(args).engine
    named = {Path(f).resolve() for f in args.files}
    unread = _not_served(named, engine.flows_dir, engine.templates_dir)
    if unread:
        # "no problems" for a misspelled path, or a file serve never reads,
        # passed a flow nobody had checked.
        print("\n".join(unread), file=sys.stderr)
        return 1
    problems = check_project(engine.flows_dir, engine.templates_dir)
    if named:
        # `tracbot check flows/turno.yaml`, as an author edits one file:
        # serve reads them all, so the others still decide the exit status.
        shown = [p for p in problems if Path(p.path).resolve() in named]
        others = len(problems) - len(shown)
        text = format_problems(shown) if shown else "no problems in the files named"
        if others:
            text += f"\n{others} more in other files (tracbot check shows all)"
        print(text, file=sys.stderr if problems else sys.stdout)
        return 1 if problems else 0
    print(format_problems(problems), file=sys.stderr if problems else sys.stdout)
    return 1 if problems else 0


def _not_served(named: set[Path], flows_dir: Path, templates_dir: Path) -> list[str]:
    """What is wrong with each named file that serve would never read."""
    folders = (flows_dir.resolve(), templates_dir.resolve())
    lines = []
    for path in sorted(named):
        if not path.is_file():
            lines.append(f"{path}: no such file")
        elif not any(path.is_relative_to(folder) for folder in folders):
            lines.append(
                f"{path}: not checked: serve reads flows from {flows_dir} and "
                f"templates from {templates_dir} (engine.flows_dir and "
                "engine.templates_dir of the config file)"
            )
    return lines


def _graph(args: argparse.Namespace) -> int:
    from bot.engine.flows import load_flows
    from bot.engine.graph import mermaid, write_all

    with _unreadable_as_flow_error():
        flows = load_flows(_settings(args).engine.flows_dir)
    if args.all:
        with _unreadable_as_flow_error():
            written = write_all(flows, Path(args.all))
        print(*written, sep="\n")
        return 0
    if args.flow is None:
        print("tracbot graph: name a flow, or use --all DIR", file=sys.stderr)
        return 2
    if args.flow not in flows:
        known = ", ".join(sorted(flows))
        print(f"tracbot graph: unknown flow {args.flow!r} ({known})", file=sys.stderr)
        return 2
    print(mermaid(flows[args.flow]))
    return 0


def _test(args: argparse.Namespace) -> int:
    from bot.engine.convtest import run_files

    paths = [Path(f) for f in args.files]
    for path in paths:
        if not path.is_file():
            print(f"tracbot test: {path}: no such file", file=sys.stderr)
            return 2
    if not paths:
        paths = sorted(Path(args.config).parent.glob("tests/conversations/*.yaml"))
    if not paths:
        print("tracbot test: no conversation tests found", file=sys.stderr)
        return 2

    # Cases run on flows `serve` would refuse passed, as if all were well.
    if _refused(_settings(args), "test"):
        return 1

    with _unreadable_as_flow_error():
        report = asyncio.run(run_files(paths, args.config))
    print(report.text())
    return 0 if report.passed else 1


@contextlib.contextmanager
def _unreadable_as_flow_error() -> Iterator[None]:
    # The flow tools report a file they cannot read or write as a message
    # naming it, like any other mistake in a flow, never as a traceback.
    try:
        yield
    except (OSError, UnicodeDecodeError) as exc:
        where = getattr(exc, "filename", None) or "a file"
        raise FlowError(f"{where}: {getattr(exc, 'strerror', None) or exc}") from exc
