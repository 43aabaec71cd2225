"""Interleaved A/B of tracbot's end-to-end row: another revision's code
against the working tree's, in pairs, so that both see the same drift of
the machine's speed.

    .venv/bin/python -m bench.ab --base 73e176a            # 4 pairs
    .venv/bin/python -m bench.ab --base HEAD~1 --pairs 6 --count 10000

Each run is `python -m bench`'s `tracbot_0` row itself (graph 0 ms, closed
loop of 32, server on core 0, generator and simulator on core 1).
The base runs the revision's `bot/` and `storage/` (a `git archive` in a
temporary folder put first on the server's PYTHONPATH), with the working
tree's config, flows and templates. Besides replies/s it shows each
server thread's CPU a message (the row's `threads_us`): a change on the
processing thread shows there first. Two runs an hour apart differ by more
than most changes do (bench/README.md); pairs minutes apart do not.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import procs, scenarios
from bench.scenarios import Load

# The code a revision's server runs; the rest comes from the working tree.
CODE = ("bot", "storage")


@dataclass(frozen=True)
class Run:
    """One run of the row: replies/s and CPU µs a message, per thread."""

    replies_per_s: float
    threads_us: tuple[float, ...]

    @property
    def cpu_us(self) -> float:
        return sum(self.threads_us)


def archive(revision: str, folder: Path) -> Path:
    """Extract the revision's code into `folder`; return the folder.

    Raises:
        SystemExit: the revision is not one git knows.
    """
    done = subprocess.run(
        ["git", "-C", str(procs.ROOT), "archive", revision, *CODE],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        raise SystemExit(f"bench.ab: cannot archive {revision!r}: {message}")
    with tempfile.TemporaryFile() as tar:
        tar.write(done.stdout)
        tar.seek(0)
        with tarfile.open(fileobj=tar) as files:
            files.extractall(folder, filter="data")
    return folder


def run_once(code: Path, count: int) -> Run:
    """The `tracbot_0` load once, the server running the code in `code`."""
    with procs.workdir() as folder:
        row = scenarios.tracbot(Load(count=count), folder, code=code)
    return Run(row.replies_per_s, tuple(row.extra["threads_us"]))


def summary(runs: dict[str, list[Run]]) -> dict[str, dict[str, float]]:
    """Medians of each side, and the working tree's ratio to the base."""
    medians = {
        side: {
            "replies_per_s": statistics.median(r.replies_per_s for r in rs),
            "cpu_us": statistics.median(r.cpu_us for r in rs),
            "busiest_thread_us": statistics.median(r.threads_us[0] for r in rs),
        }
        for side, rs in runs.items()
    }
    pairs = zip(runs["base"], runs["tree"], strict=True)
    wins = sum(tree.replies_per_s > base.replies_per_s for base, tree in pairs)
    base, tree = medians["base"], medians["tree"]
    medians["ratio"] = {
        "replies_per_s": round(tree["replies_per_s"] / base["replies_per_s"], 3),
        "cpu_us": round(tree["cpu_us"] / base["cpu_us"], 3),
        "pairs_won": wins,
    }
    return medians


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("--base", required=True, help="git revision to compare with")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--count", type=int, default=20_000, help="webhooks a run")
    args = parser.parse_args(argv)

    runs: dict[str, list[Run]] = {"base": [], "tree": []}
    with tempfile.TemporaryDirectory(prefix="tracbot-ab-") as scratch:
        code = {"base": archive(args.base, Path(scratch)), "tree": procs.ROOT}
        for pair in range(args.pairs):
            # Which side goes first alternates: a drift within a pair
            # favours neither.
            order = ("base", "tree") if pair % 2 == 0 else ("tree", "base")
            for side in order:
                run = run_once(code[side], args.count)
                runs[side].append(run)
                threads = " ".join(f"{us:.0f}" for us in run.threads_us)
                print(
                    f"pair {pair + 1} {side}: replies/s={run.replies_per_s:.0f} "
                    f"cpu={run.cpu_us:.0f} us/msg (threads {threads})",
                    flush=True,
                )

    result = summary(runs)
    for side in ("base", "tree"):
        figures = result[side]
        print(
            f"{side} ({args.base if side == 'base' else 'working tree'}): "
            f"replies/s {figures['replies_per_s']:.0f}, cpu {figures['cpu_us']:.0f} "
            f"us/msg, busiest thread {figures['busiest_thread_us']:.0f} us/msg"
        )
    ratio = result["ratio"]
    print(
        f"tree / base: replies/s {ratio['replies_per_s']}, cpu a message "
        f"{ratio['cpu_us']}, pairs won {ratio['pairs_won']} of {args.pairs}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
