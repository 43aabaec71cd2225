"""`python -m bench`: every row of the benchmark, repeated, as medians.

Rows are run in rounds (all rows once, then all again), so that the drift of
the machine's speed spreads over every row instead of favouring the first;
the table reports each figure's median over the rounds and the ratios to
the baselines measured in the same run. `--quick` is a small run (seconds);
`--faults` runs the fault suite at full size instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs
from bench.scenarios import Load, Row, Skipped, bare, pywa, reference, tracbot


@dataclass(frozen=True)
class Size:
    count: int
    rate_seconds: float
    memory_big: int
    repeat: int


FULL = Size(count=20_000, rate_seconds=10.0, memory_big=1_000_000, repeat=3)
QUICK = Size(count=2_000, rate_seconds=3.0, memory_big=20_000, repeat=1)

Scenario = Callable[[Path], Row]


def rows(size: Size, capacity: float | None) -> dict[str, Scenario]:
    """Every row but the overload one, which needs the measured capacity."""
    closed = Load(count=size.count, concurrency=32)
    in_flight_50 = Load(count=size.count // 4, concurrency=50)
    steady = Load(
        count=int(1000 * size.rate_seconds), rate=1000, concurrency=256, phones=5000
    )
    few = Load(count=size.count // 2, concurrency=32, phones=1000)
    return {
        "bare": lambda d: bare(closed, d),
        "ingest": lambda d: tracbot(closed, d, ingest_only=True),
        "reference_0": lambda d: reference(closed, d),
        "reference_0_uvloop": lambda d: reference(closed, d, uvloop=True),
        "pywa_0": lambda d: pywa(closed, d),
        "tracbot_0": lambda d: tracbot(closed, d),
        "tracbot_0_read": lambda d: tracbot(
            closed,
            d,
            label="tracbot, graph 0 ms, read marks on",
            overrides={"whatsapp.mark_read": True},
        ),
        "reference_50": lambda d: reference(in_flight_50, d, delay=0.05),
        "pywa_50": lambda d: pywa(in_flight_50, d, delay=0.05),
        "tracbot_50": lambda d: tracbot(in_flight_50, d, delay=0.05),
        "ack_1000_0": lambda d: tracbot(
            steady, d, label="tracbot at 1,000/s, graph 0 ms"
        ),
        "ack_1000_50": lambda d: tracbot(
            steady, d, delay=0.05, label="tracbot at 1,000/s, graph 50 ms"
        ),
        "ack_1000_500": lambda d: tracbot(
            steady, d, delay=0.5, label="tracbot at 1,000/s, graph 500 ms"
        ),
        # CPU a message at lighter loads (cpu / rate): the server does the
        # same steps for fewer messages at a time, so batches are smaller.
        "rate_200": lambda d: tracbot(
            Load(count=int(200 * size.rate_seconds), rate=200, phones=5000),
            d,
            label="tracbot at 200/s, graph 0 ms",
        ),
        "rate_600": lambda d: tracbot(
            Load(count=int(600 * size.rate_seconds), rate=600, phones=5000),
            d,
            label="tracbot at 600/s, graph 0 ms",
        ),
        "memory_1k": lambda d: tracbot(
            few, d, conversations=1000, label="tracbot, 1k stored conversations"
        ),
        "memory_big": lambda d: tracbot(
            few,
            d,
            conversations=size.memory_big,
            label=f"tracbot, {size.memory_big:,} stored conversations",
        ),
    }


def overload(size: Size, capacity: float) -> Scenario:
    """Twice the measured end-to-end capacity, open loop, then the drain."""
    rate = 2 * capacity
    load = Load(
        count=int(rate * size.rate_seconds),
        rate=rate,
        concurrency=512,
        phones=5000,
        time_cap=size.rate_seconds * 3,
    )
    label = f"tracbot at 2x capacity ({rate:,.0f}/s)"
    return lambda d: tracbot(load, d, label=label)


def run_rows(scenarios: dict[str, Scenario], repeat: int) -> dict[str, list[Row]]:
    results: dict[str, list[Row]] = {key: [] for key in scenarios}
    for round_ in range(repeat):
        for key, scenario in scenarios.items():
            with procs.workdir() as folder:
                began = time.monotonic()
                try:
                    row = scenario(folder)
                except Skipped as reason:
                    print(f"round {round_ + 1} {key}: skipped: {reason}", flush=True)
                    continue
            results[key].append(row)
            took = time.monotonic() - began
            print(f"round {round_ + 1} {key}: {_brief(row)} ({took:.0f}s)", flush=True)
    return results


def median_row(runs: list[Row]) -> dict[str, Any]:
    """Each numeric figure's median over the runs of one row."""
    out: dict[str, Any] = {"name": runs[0].name, "runs": len(runs)}
    for key, value in runs[0].as_dict().items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            values = [getattr(r, key) for r in runs if getattr(r, key) is not None]
            out[key] = statistics.median(values) if values else None
        elif value is None:
            out[key] = None
    out["lost"] = [r.acked - (r.replies or 0) for r in runs if r.replies is not None]
    out["statuses"] = [r.extra.get("statuses") for r in runs]
    # End-to-end rows: each busy server thread's CPU, µs a webhook, a round each.
    out["threads_us"] = [r.extra.get("threads_us") for r in runs]
    return out


# (name, row, field, baseline row, baseline field) of every reported ratio.
RATIOS = (
    ("ingest / bare (acked/s)", "ingest", "acked_per_s", "bare", "acked_per_s"),
    (
        "tracbot / reference, graph 0 ms (replies/s)",
        "tracbot_0",
        "replies_per_s",
        "reference_0",
        "replies_per_s",
    ),
    (
        "tracbot / reference on uvloop, graph 0 ms (replies/s)",
        "tracbot_0",
        "replies_per_s",
        "reference_0_uvloop",
        "replies_per_s",
    ),
    (
        "tracbot / reference, graph 50 ms (replies/s)",
        "tracbot_50",
        "replies_per_s",
        "reference_50",
        "replies_per_s",
    ),
    (
        "tracbot / pywa, graph 0 ms (replies/s)",
        "tracbot_0",
        "replies_per_s",
        "pywa_0",
        "replies_per_s",
    ),
    (
        "tracbot / pywa, graph 50 ms (replies/s)",
        "tracbot_50",
        "replies_per_s",
        "pywa_50",
        "replies_per_s",
    ),
    ("rss big / rss 1k (memory rows)", "memory_big", "rss_mib", "memory_1k", "rss_mib"),
)


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return round(top / bottom, 3) if top and bottom else None


def ratios(table: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Each ratio of the medians in `table`."""
    return {
        name: _ratio(table[key].get(field), table[base].get(base_field))
        if key in table and base in table
        else None
        for name, key, field, base, base_field in RATIOS
    }


def round_ratios(results: dict[str, list[Row]]) -> dict[str, list[float | None]]:
    """Each ratio round by round: the row and its baseline of the same round
    ran minutes apart, not a whole run, so drift in the machine's speed
    weighs less on them."""
    out: dict[str, list[float | None]] = {}
    for name, key, field, base, base_field in RATIOS:
        pairs = zip(results.get(key, []), results.get(base, []), strict=False)
        found = [_ratio(getattr(a, field), getattr(b, base_field)) for a, b in pairs]
        if found:
            out[name] = found
    return out


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _brief(row: Row) -> str:
    parts = [f"acked/s={row.acked_per_s}", f"p99={row.p99_ms}ms"]
    if row.replies is not None:
        parts += [f"replies={row.replies}/{row.acked}"]
        parts += [f"replies/s={row.replies_per_s}"]
    if row.extra.get("handler_errors"):
        parts += [f"errors={row.extra['handler_errors']}"]
    parts += [f"cpu={row.server_cpu}", f"rss={row.rss_mib}MiB"]
    return " ".join(parts)


def print_table(table: dict[str, dict[str, Any]]) -> None:
    head = (
        f"{'row':44} {'acked/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'replies':>8} {'lost':>6} {'repl/s':>7} {'cpu':>5} {'sim':>5} {'rss':>6}"
    )
    print(head)
    for row in table.values():
        lost = statistics.median(row["lost"]) if row["lost"] else None
        print(
            f"{row['name'][:44]:44} {_f(row['acked_per_s'], 0):>8} "
            f"{_f(row['p50_ms'], 1):>7} {_f(row['p99_ms'], 1):>7} "
            f"{_f(row['replies'], 0):>8} {_f(lost, 0):>6} "
            f"{_f(row['replies_per_s'], 0):>7} "
            f"{_f(row['server_cpu'], 2):>5} {_f(row['sim_cpu'], 2):>5} "
            f"{_f(row['rss_mib'], 0):>6}"
        )


def _f(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="a small run")
    parser.add_argument("--repeat", type=int, help="rounds (default 3, quick 1)")
    parser.add_argument("--rows", help="comma-separated row keys (default: all)")
    parser.add_argument("--faults", action="store_true", help="fault suite, full")
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    # A stop request unwinds through the scenarios' `finally`, so that no
    # server or simulator outlives the run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if args.faults:
        from bench import faults

        return faults.main(quick=args.quick)

    size = QUICK if args.quick else FULL
    repeat = args.repeat or size.repeat
    scenarios = rows(size, None)
    if args.rows:
        wanted = args.rows.split(",")
        scenarios = {k: v for k, v in scenarios.items() if k in wanted}
    info = machine()
    results = run_rows(scenarios, repeat)
    table = {key: median_row(runs) for key, runs in results.items() if runs}

    capacity = table.get("tracbot_0", {}).get("replies_per_s")
    if capacity and (not args.rows or "overload" in args.rows.split(",")):
        extra = run_rows({"overload": overload(size, capacity)}, repeat)
        table["overload"] = median_row(extra["overload"])

    print()
    print_table(table)
    print()
    by_round = round_ratios(results)
    for name, value in ratios(table).items():
        rounds = ", ".join(str(r) for r in by_round.get(name, []))
        print(f"{name}: {value}" + (f" (rounds: {rounds})" if rounds else ""))
    if args.out:
        document = {"machine": info, "command": sys.argv, "rows": table}
        document["ratios"] = ratios(table)
        document["round_ratios"] = by_round
        Path(args.out).write_text(json.dumps(document, indent=2))
    return 0
