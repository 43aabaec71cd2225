"""Logging set-up and the helpers that keep personal data out of logs.

Each layer has its own logger (`tracbot.webhook`, `tracbot.dispatcher`,
`tracbot.engine`, `tracbot.sender`, `tracbot.graph`, `tracbot.storage`).
Phone numbers are masked everywhere and message text is logged only at
DEBUG.
"""

from __future__ import annotations

import logging
import sys


def mask(wa_id: str | None) -> str:
    """Return a phone number with all but its last four digits hidden."""
    if not wa_id:
        return "-"
    return "…" + wa_id[-4:]


def setup(level: str = "INFO") -> None:
    """Send tracbot's logs to stderr as one key=value line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger("tracbot")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
