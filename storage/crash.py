"""Crash points for the kill-at-each-point tests.

`TRACBOT_CRASH_AT=<point>` makes the process die at once (`os._exit`, as
SIGKILL would: no cleanup, no commit, no flush) the first time it reaches
that point. The variable is read once, when the process starts; unset, a
crash point costs one comparison. Points:

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

# Read once: os.environ encodes the key on every look-up, and a crash point
# sits on the path of every message.
ARMED = os.environ.get(VARIABLE)


def crash_point(name: str) -> None:
    """Die here if TRACBOT_CRASH_AT names this point."""
    if name == ARMED:
        print(f"tracbot: crash point {name} reached, exiting", file=sys.stderr)
        sys.stderr.flush()
        os._exit(EXIT_STATUS)
