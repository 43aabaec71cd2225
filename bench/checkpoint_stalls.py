"""How long a COMMIT waits while the WAL checkpointer works, by its interval.

    .venv/bin/python -m bench.checkpoint_stalls [--seconds 8]
                                                [--intervals 0.5,0.2,0.05]

A writer commits small transactions (five inbox-sized rows, one every
millisecond, as a busy webhook does) into a fresh SQLite file in WAL mode
with `synchronous=NORMAL`, while `storage.sqlite_checkpoint.Checkpointer`
checkpoints the same file at the given interval. It prints the COMMIT
latency percentiles per interval and, as ratios, each interval's p99.9 and
worst against the first interval's, measured in the same run.

What it showed (bench/README.md, fourth pass): the worst COMMIT follows
the longest checkpoint, so short intervals keep each checkpoint, and the
stall it causes, small.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from storage.sqlite_checkpoint import Checkpointer

ROW = "x" * 300


def measure(folder: Path, interval: float, seconds: float) -> dict[str, float]:
    """Commit for `seconds` beside a checkpointer; return latencies in ms."""
    path = folder / f"stalls-{interval}.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA wal_autocheckpoint=10000")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v TEXT)")
    db.execute("CREATE INDEX t_k ON t (k)")

    checkpointer = Checkpointer(str(path), interval).start()
    latencies = []
    number = 0
    try:
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            started = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            for _ in range(5):
                number += 1
                db.execute("INSERT INTO t (k, v) VALUES (?, ?)", (str(number), ROW))
            db.execute("COMMIT")
            latencies.append(time.perf_counter() - started)
            time.sleep(0.001)
    finally:
        checkpointer.stop()
        db.close()

    latencies.sort()

    def at(share: float) -> float:
        return round(
            latencies[min(len(latencies) - 1, int(len(latencies) * share))] * 1000, 2
        )

    return {
        "commits": len(latencies),
        "checkpoints": checkpointer.runs,
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": round(latencies[-1] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--intervals", default="0.5,0.2,0.05")
    args = parser.parse_args()
    intervals = [float(value) for value in args.intervals.split(",")]

    # The database lives on the disk the server's would, not in tmpfs.
    with tempfile.TemporaryDirectory(dir=Path.cwd(), prefix=".stalls-") as scratch:
        results = {i: measure(Path(scratch), i, args.seconds) for i in intervals}

    base = results[intervals[0]]
    print(
        "interval s  commits  checkpoints  p50 ms  p99 ms  p99.9 ms  max ms"
        "  p99.9 ratio  max ratio"
    )
    for interval, row in results.items():
        print(
            f"{interval:>10}  {row['commits']:>7}  {row['checkpoints']:>11}"
            f"  {row['p50_ms']:>6}  {row['p99_ms']:>6}  {row['p999_ms']:>8}"
            f"  {row['max_ms']:>6}  {row['p999_ms'] / base['p999_ms']:>11.2f}"
            f"  {row['max_ms'] / base['max_ms']:>9.2f}"
        )


if __name__ == "__main__":
    main()
