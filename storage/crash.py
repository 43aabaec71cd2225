"""Crash points for the kill-at-each-point tests.

`TRACBOT_CRASH_AT=<point>` makes the process die at once (`os._exit`, as
SIGKILL would: no cleanup, no commit, no flush) the first time it reaches
that point. Unset, a crash point costs one dictionary look-up. Points:

- `after_engine`: the engine produced the replies, nothing is committed;
- `in_commit`: the step's rows are written, its transaction not committed
  (PostgreSQL backend);
- `after_commit`: the step is committed, no reply has been sent.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "TRACBOT_CRASH_AT"
EXIT_STATUS = 86


def crash_point(name: str) -> None:
    """Die here if TRACBOT_CRASH_AT names this point."""
    if os.environ.get(VARIABLE) == name:
        print(f"tracbot: crash point {name} reached, exiting", file=sys.stderr)
        sys.stderr.flush()
        os._exit(EXIT_STATUS)
