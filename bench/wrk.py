"""The fixed-rate generator: `wrk` (C) posting pre-signed webhooks on a schedule.

The Python generator (bench/load.py) cannot hold 1,000 posts a second on a
core it shares with the Graph API simulator; wrk can, at a few percent of
that core. The bodies are the same as load.py's (a unique wamid each),
signed and written to a file before the clock starts; bench/wrk_rate.lua
posts each once, on schedule, and reports in the shape of load.py's summary.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import load as python_load

SCRIPT = Path(__file__).with_name("wrk_rate.lua")


def available() -> bool:
    """Whether wrk is installed (`apt-get install wrk`)."""
    return shutil.which("wrk") is not None


def write_bodies(path: Path, args: argparse.Namespace) -> int:
    """Sign every body of the run into `path`, one `signature<TAB>body` a line."""
    lines = []
    for body, headers in python_load.bodies(args):
        lines.append(headers["X-Hub-Signature-256"].encode() + b"\t" + body)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return len(lines)


def run(
    generator_args: list[str],
    folder: Path,
    pin: Callable[[list[str]], list[str]],
    on_start: Callable[[], None],
) -> dict[str, Any]:
    """Run one fixed-rate load with wrk; return load.py's summary shape.

    `generator_args` are load.py's arguments (the same Load describes both).
    """
    args = python_load.parse_args(generator_args)
    bodies = folder / "bodies.txt"
    count = write_bodies(bodies, args)
    # The schedule ends after count / rate seconds; wrk's own cap is the
    # generator's time cap plus room for the last answers.
    seconds = int(args.time_cap + args.timeout + 5)
    command = pin(
        [
            "wrk",
            "-t1",
            f"-c{args.concurrency}",
            f"-d{seconds}s",
            f"--timeout={int(args.timeout)}s",
            "-s",
            str(SCRIPT),
            args.url,
            "--",
            str(bodies),
            str(args.rate),
        ]
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    on_start()
    out, err, status = _until_answered(command, seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in out.splitlines() if line.startswith("WRK ")]
    if status != 0 or not lines:
        raise RuntimeError(f"wrk failed: {out[-1000:]} {err[-1000:]}")

    report = json.loads(lines[-1].removeprefix("WRK "))
    # From the first post to the last answer; wrk's own duration runs to
    # the interrupt, or to -d when some post was never answered.
    elapsed = report["active_ms"] / 1000 or report["duration_us"] / 1e6
    statuses = {str(k): v for k, v in report["statuses"].items()}
    for kind, n in report["errors"].items():
        if n and kind != "read":  # a read error follows each timeout too
            statuses[kind] = n
    acked = statuses.get("200", 0)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "generator": "wrk",
        "sent": count,
        "statuses": statuses,
        "acked": acked,
        "elapsed": round(elapsed, 4),
        "acked_per_s": round(acked / elapsed, 1) if elapsed else 0.0,
        "p50_ms": report["p50_us"] / 1000,
        "p99_ms": report["p99_us"] / 1000,
        "max_ms": report["max_us"] / 1000,
        "late": report["late"],
        "cpu_s": round(cpu, 3),
    }


def _until_answered(command: list[str], timeout: float) -> tuple[str, str, int]:
    """Run wrk; interrupt it (it then reports) once every post was answered."""
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as wrk:
        assert wrk.stdout is not None
        lines = []
        timer = threading.Timer(timeout, wrk.kill)
        timer.start()
        try:
            for line in wrk.stdout:
                lines.append(line)
                if line.startswith("WRK-ANSWERED"):
                    wrk.send_signal(signal.SIGINT)
            err = wrk.stderr.read() if wrk.stderr else ""
            wrk.wait()
        finally:
            timer.cancel()
    return "".join(lines), err, wrk.returncode
