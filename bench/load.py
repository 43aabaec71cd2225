"""The load generator: signed webhooks posted to one URL, bounded and timed.

Run in a process of its own (`python -m bench.load …`), pinned to a core
other than the server's. It posts at most `--count` webhooks, stops issuing
new ones after `--time-cap` seconds, and prints one JSON line: how many
were sent and answered with which status, and the ack latencies.

Two modes: closed loop (`--concurrency` workers, each posting as soon as its
previous post was answered: the most a server can take) and open loop
(`--rate` posts per second on a fixed schedule, at most `--concurrency` in
flight: the latency a server shows at a given load).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from bench.webhooks import bsuid, phone, signature, text_webhook, wamid


@dataclass
class Tally:
    """What the generator saw."""

    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    late: int = 0

    def summary(self, elapsed: float, started_at: float) -> dict[str, object]:
        ordered = sorted(self.latencies)
        sent = len(ordered)
        return {
            "sent": sent,
            "statuses": dict(self.statuses),
            "acked": self.statuses.get("200", 0),
            "elapsed": round(elapsed, 4),
            "started_at": started_at,
            "acked_per_s": round(self.statuses.get("200", 0) / elapsed, 1)
            if elapsed
            else 0.0,
            "p50_ms": _ms(ordered, 0.50),
            "p99_ms": _ms(ordered, 0.99),
            "max_ms": _ms(ordered, 1.0),
            "late": self.late,
        }


def _ms(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, int(q * len(ordered)))
    return round(ordered[index] * 1000, 3)


def bodies(args: argparse.Namespace) -> list[tuple[bytes, dict[str, str]]]:
    """Every body of the run, signed before the clock starts."""
    out = []
    for i in range(args.count):
        index = args.start + i
        sender = index % args.phones
        body = text_webhook(
            phone(sender),
            wamid(args.run, index),
            args.text,
            args.phone_number_id,
            1780318800 + index,
            bsuid(sender) if args.bsuid else None,
        )
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": signature(args.secret, body),
        }
        out.append((body, headers))
    return out


async def post(
    session: aiohttp.ClientSession, url: str, item: tuple[bytes, dict], tally: Tally
) -> None:
    body, headers = item
    began = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            status = str(response.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        status = type(exc).__name__
    tally.latencies.append(time.perf_counter() - began)
    tally.statuses[status] += 1


async def closed_loop(args: argparse.Namespace, items: list, tally: Tally) -> None:
    position = iter(range(len(items)))
    deadline = time.monotonic() + args.time_cap
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.timeout)

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in position:
            if time.monotonic() > deadline:
                return
            await post(session, args.url, items[i], tally)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(args.concurrency)))


async def open_loop(args: argparse.Namespace, items: list, tally: Tally) -> None:
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    slots = asyncio.Semaphore(args.concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, item: tuple) -> None:
        try:
            await post(session, args.url, item, tally)
        finally:
            slots.release()

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.monotonic()
        for i, item in enumerate(items):
            due = start + i / args.rate
            now = time.monotonic()
            if now - start > args.time_cap:
                break
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > 0.01:
                # The schedule slipped: the server (or we) fell behind.
                tally.late += 1
            await slots.acquire()
            task = asyncio.create_task(one(session, item))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)


async def run(args: argparse.Namespace) -> dict[str, object]:
    items = bodies(args)
    if args.wait_go:
        # The caller starts its clocks and CPU counters on our "ready", so
        # that our start-up and signing are not counted as the server's idle.
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
    tally = Tally()
    started_at = time.time()
    began = time.perf_counter()
    if args.rate:
        await open_loop(args, items, tally)
    else:
        await closed_loop(args, items, tally)
    summary = tally.summary(time.perf_counter() - began, started_at)
    summary["cpu_s"] = round(time.process_time(), 3)
    return summary


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=0.0, help="0: closed loop")
    parser.add_argument("--time-cap", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--phones", type=int, default=1000)
    parser.add_argument("--start", type=int, default=0, help="first message index")
    parser.add_argument("--run", default="r0", help="run id inside every wamid")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--phone-number-id", default="200000000000002")
    parser.add_argument("--text", default="AYUDA")
    parser.add_argument(
        "--bsuid", action="store_true", help="add BSUID fields (2026 shape)"
    )
    parser.add_argument(
        "--wait-go", action="store_true", help="print ready, start on a stdin line"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    print(json.dumps(asyncio.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
