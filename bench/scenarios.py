"""One measurement each: start the processes, run a load, count the replies.

Every scenario starts its own simulator and server (fresh database), pins
the server to core 0 and the load generator and the simulator to core 1,
runs one bounded load and returns a `Row`. Replies are counted where they
land, in the simulator, by polling its `/_sim/count`.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from bench import procs, wrk
from bench.webhooks import phone

SERVER_CPU = 0
LOAD_CPU = 1


@dataclass
class Row:
    """The figures of one run of one scenario."""

    name: str
    sent: int = 0
    acked: int = 0
    acked_per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    replies: int | None = None
    replies_per_s: float | None = None
    server_cpu: float = 0.0
    sim_cpu: float = 0.0
    load_cpu: float = 0.0
    rss_mib: float = 0.0
    drain_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Load:
    """A load generator run: closed loop unless `rate` is set."""

    count: int
    concurrency: int = 32
    rate: float = 0.0
    time_cap: float = 60.0
    phones: int = 1000
    run: str = "r0"
    bsuid: bool = False

    def command(self, url: str) -> list[str]:
        command = [sys.executable, "-m", "bench.load", *self.args(url)]
        return procs.pinned(command, LOAD_CPU)

    def args(self, url: str) -> list[str]:
        """The arguments of bench/load.py (bench/wrk.py reads them too)."""
        return [
            "--url",
            f"{url}/webhook",
            "--count",
            str(self.count),
            "--concurrency",
            str(self.concurrency),
            "--rate",
            str(self.rate),
            "--time-cap",
            str(self.time_cap),
            "--phones",
            str(self.phones),
            "--run",
            self.run,
            "--secret",
            procs.APP_SECRET,
            *(["--bsuid"] if self.bsuid else []),
        ]


def run_load(
    load: Load, server: procs.Proc, on_start: Callable[[], None] = lambda: None
) -> dict[str, Any]:
    """Run the generator to completion and return its summary.

    `on_start` is called once the generator has signed its bodies and is
    about to post the first one: the start of every measured window. A
    fixed-rate load runs on wrk when it is installed (bench/wrk.py): the
    Python generator cannot hold 1,000/s on the core it shares.
    """
    if load.rate and wrk.available():
        with procs.workdir("tracbot-wrk-") as folder:
            return wrk.run(
                load.args(server.url),
                folder,
                lambda command: procs.pinned(command, LOAD_CPU),
                on_start,
            )
    command = [*load.command(server.url), "--wait-go"]
    with subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=procs.ROOT,
    ) as generator:
        assert generator.stdin is not None and generator.stdout is not None
        ready = generator.stdout.readline()
        if ready.strip() != "ready":
            raise RuntimeError(f"load generator failed: {generator.stderr.read()}")
        on_start()
        generator.stdin.write("go\n")
        generator.stdin.flush()
        out, err = generator.communicate(timeout=load.time_cap + 120)
    if generator.returncode != 0:
        raise RuntimeError(f"load generator failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def sim_count(sim: procs.Proc) -> dict[str, int]:
    with urllib.request.urlopen(f"{sim.url}/_sim/count", timeout=10) as answer:
        return json.load(answer)


def wait_replies(
    sim: procs.Proc, expected: int, stall: float = 10.0
) -> tuple[int, float]:
    """Poll until `expected` sends were accepted or nothing moved for `stall` s.

    Returns:
        The sends accepted, and the monotonic time their count last moved.
    """
    last, moved = -1, time.monotonic()
    while True:
        accepted = sim_count(sim)["accepted"]
        if accepted >= expected:
            return accepted, time.monotonic()
        if accepted != last:
            last, moved = accepted, time.monotonic()
        elif time.monotonic() - moved > stall:
            return accepted, moved
        time.sleep(0.05)


class Measured:
    """CPU time of a set of processes between `start` and `stop`."""

    def __init__(self, **processes: procs.Proc) -> None:
        self.processes = processes
        self.start()

    def start(self) -> None:
        """(Re)start the window: now, and each process's CPU time so far."""
        self.began = time.monotonic()
        self.cpu = {name: p.cpu_seconds() for name, p in self.processes.items()}

    def share(self, name: str, wall: float) -> float:
        """CPU used by one process as a share of one core, over `wall` s."""
        used = self.processes[name].cpu_seconds() - self.cpu[name]
        return round(used / wall, 3) if wall > 0 else 0.0


def fill_row(row: Row, summary: dict[str, Any]) -> None:
    row.sent = summary["sent"]
    row.acked = summary["acked"]
    row.acked_per_s = summary["acked_per_s"]
    row.p50_ms = summary["p50_ms"]
    row.p99_ms = summary["p99_ms"]
    row.load_cpu = round(summary.get("cpu_s", 0.0) / summary["elapsed"], 3)
    row.extra["statuses"] = summary["statuses"]
    row.extra["late"] = summary.get("late", 0)
    row.extra["generator"] = summary.get("generator", "bench.load")


def bare(load: Load, folder: Path) -> Row:
    """The ceiling: an aiohttp handler that only answers 200."""
    server = procs.python_server("bare", "bench.bare", [], cpu=SERVER_CPU).start()
    try:
        measured = Measured(server=server)
        summary = run_load(load, server, measured.start)
        row = Row("bare aiohttp 200")
        fill_row(row, summary)
        row.server_cpu = measured.share("server", summary["elapsed"])
        row.rss_mib = round(server.rss_mib(), 1)
        return row
    finally:
        server.stop()


def reference(
    load: Load, folder: Path, delay: float = 0.0, uvloop: bool = False
) -> Row:
    """The hand-written bot: its 200 waits for its reply's send."""
    sim = procs.simulator(delay=delay, cpu=LOAD_CPU, log_dir=folder)
    args = ["--graph-url", sim.url, "--token", procs.TOKEN]
    args += ["--secret", procs.APP_SECRET, *(["--uvloop"] if uvloop else [])]
    server = procs.python_server("reference", "bench.reference", args, cpu=SERVER_CPU)
    try:
        sim.start()
        server.start()
        name = f"reference bot, graph {delay * 1000:g} ms"
        name += ", uvloop" if uvloop else ""
        return _end_to_end(name, load, server, sim)
    finally:
        server.stop()
        sim.stop()


class Skipped(Exception):
    """A row that cannot run here; the message says why."""


PYWA_MODULES = ("pywa_async", "starlette", "uvicorn")
_LOG_RECORD = re.compile(r"^(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d )", re.M)


def pywa(load: Load, folder: Path, delay: float = 0.0) -> Row:
    """pywa on its own server: its 200 goes out before its reply's send.

    Replies lost after the 200 (pool timeouts, errors) show as acked minus
    replies; the handler errors pywa logged are counted by exception type.
    """
    missing = [name for name in PYWA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        wanted = ", ".join(missing)
        raise Skipped(f"{wanted} not installed (pip install -e '.[bench]')")

    sim = procs.simulator(delay=delay, cpu=LOAD_CPU, log_dir=folder)
    args = ["--graph-url", sim.url, "--token", procs.TOKEN]
    args += ["--secret", procs.APP_SECRET]
    server = procs.python_server("pywa", "bench.pywa_peer", args, cpu=SERVER_CPU)
    server.log_path = folder / "pywa.log"
    try:
        sim.start()
        server.start()
        name = f"pywa {version('pywa')}, graph {delay * 1000:g} ms"
        row = _end_to_end(name, replace(load, bsuid=True), server, sim)
        row.extra["handler_errors"] = handler_errors(server.log_path)
        return row
    finally:
        server.stop()
        sim.stop()


def handler_errors(log: Path) -> dict[str, int]:
    """The ERROR records of a pywa log, by the type of their last exception."""
    if not log.exists():
        return {}
    text = log.read_text(errors="replace")
    counts: Counter[str] = Counter()
    for record in _LOG_RECORD.split(text):
        lines = record.strip().splitlines()
        if not lines or " ERROR " not in lines[0]:
            continue
        # A traceback ends with the exception that was raised last.
        last = lines[-1] if len(lines) > 1 else "no traceback"
        name = last.split(":", 1)[0].rsplit(".", 1)[-1]
        counts[name] += 1
    return dict(counts)


def tracbot(
    load: Load,
    folder: Path,
    *,
    delay: float = 0.0,
    label: str = "",
    overrides: dict[str, Any] | None = None,
    ingest_only: bool = False,
    conversations: int = 0,
    code: Path | None = None,
) -> Row:
    """`tracbot serve` on SQLite, end to end unless `ingest_only`; with
    `code`, the server runs the `bot/` and `storage/` found there
    (bench/ab.py)."""
    settings = {"sender.rate_per_second": 1_000_000, "whatsapp.mark_read": False}
    if ingest_only:
        # With no phone allowed at once, the dispatcher takes nothing: what
        # is left is the webhook path alone (signature, parse, insert, 200).
        settings["engine.max_concurrent_phones"] = 0
    settings.update(_engine_snapshot(folder))
    settings.update(overrides or {})

    database = folder / "tracbot.db"
    if conversations:
        prefill_conversations(database, conversations)
    sim = procs.simulator(delay=delay, cpu=LOAD_CPU, log_dir=folder)
    server = procs.tracbot(
        sim.url, f"sqlite:///{database}", folder, overrides=settings, cpu=SERVER_CPU
    )
    if code is not None:
        server.env = {**server.env, "PYTHONPATH": str(code)}
    try:
        sim.start()
        server.start()
        name = label or f"tracbot, graph {delay * 1000:g} ms"
        if ingest_only:
            measured = Measured(server=server)
            summary = run_load(load, server, measured.start)
            row = Row(label or "tracbot ingest (sqlite)")
            fill_row(row, summary)
            row.server_cpu = measured.share("server", summary["elapsed"])
            row.rss_mib = round(server.rss_mib(), 1)
            return row
        return _end_to_end(name, load, server, sim)
    finally:
        server.stop()
        sim.stop()


def _engine_snapshot(folder: Path) -> dict[str, str]:
    """Copies of the flows and templates for one run.

    The server hot-reloads its flow and template folders; in a working tree
    that others are editing, a reload (and its check) in the middle of a
    measured window would be counted as the server's own latency.
    """
    engine = yaml.safe_load((procs.ROOT / "config.yaml").read_text("utf-8"))["engine"]
    out = {}
    for key in ("flows_dir", "templates_dir"):
        copy = folder / f"snapshot_{key}"
        shutil.copytree(procs.ROOT / engine[key], copy)
        out[f"engine.{key}"] = str(copy)
    return out


def _end_to_end(name: str, load: Load, server: procs.Proc, sim: procs.Proc) -> Row:
    measured = Measured(server=server, sim=sim)
    threads_before = server.thread_cpu_seconds()
    summary = run_load(load, server, measured.start)
    replies, last_reply = wait_replies(sim, summary["acked"])
    wall = time.monotonic() - measured.began
    # Replies/s runs to the last reply: a row that loses replies is not
    # also charged the stall spent waiting for ones that never came.
    to_last = max(last_reply - measured.began, summary["elapsed"])

    row = Row(name)
    fill_row(row, summary)
    row.replies = replies
    row.replies_per_s = round(replies / to_last, 1)
    row.drain_s = round(max(0.0, to_last - summary["elapsed"]), 2)
    row.server_cpu = measured.share("server", wall)
    row.sim_cpu = measured.share("sim", wall)
    row.rss_mib = round(server.rss_mib(), 1)
    # Each busy thread of the server, µs of CPU a webhook, busiest first.
    used = server.thread_cpu_seconds()
    per_webhook = [
        (seconds - threads_before.get(tid, 0.0)) / max(1, summary["acked"]) * 1e6
        for tid, seconds in used.items()
    ]
    row.extra["threads_us"] = sorted(
        (round(us, 1) for us in per_webhook if us >= 1.0), reverse=True
    )
    return row


def prefill_conversations(database: Path, count: int) -> None:
    """Store `count` idle conversations before the server starts.

    The schema comes from the store's own migrations (opened once), the rows
    from one bulk insert: what the server will later hold, not how it grew.
    """
    import asyncio

    from storage.sqlite import SqliteStore

    async def migrate() -> None:
        async with SqliteStore(f"sqlite:///{database}"):
            pass

    asyncio.run(migrate())
    now = "2026-06-01T13:00:00+00:00"
    with sqlite3.connect(database) as db:
        db.executemany(
            "INSERT OR IGNORE INTO conversations (wa_id, flow, state, slots, "
            "last_inbound_at, updated_at) VALUES (?, NULL, NULL, '{}', ?, ?)",
            ((phone(i), now, now) for i in range(count)),
        )
