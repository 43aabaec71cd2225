"""Logging set-up and the helpers that keep personal data out of logs.

Each layer has its own logger (`tracbot.webhook`, `tracbot.dispatcher`,
`tracbot.engine`, `tracbot.sender`, `tracbot.graph`, `tracbot.storage`).
Phone numbers are masked everywhere and message text is logged only at
DEBUG.
"""

from __future__ import annotations

import logging
import sys
import time


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

    # asyncpg's pool logs each failed reconnect with a whole traceback (8
    # of them a process in an 8 s outage), aiohttp each request it cannot
    # decode (`Content-Encoding: br`, from anyone): the same line format
    # here, the error on that line.
    others = logging.StreamHandler(sys.stderr)
    others.setFormatter(_OneLine("%(asctime)s %(levelname)s %(name)s %(message)s"))
    for name in ("asyncpg", "aiohttp.server"):
        library = logging.getLogger(name)
        library.handlers[:] = [others]
        library.propagate = False


class _OneLine(logging.Formatter):
    """A record's exception as `: Type: message` on its own line."""

    def format(self, record: logging.LogRecord) -> str:
        error = record.exc_info[1] if record.exc_info else None
        shown = logging.LogRecord(
            record.name,
            record.levelno,
            record.pathname,
            record.lineno,
            record.getMessage()
            + (f": {type(error).__name__}: {error}" if error else ""),
            None,
            None,
        )
        shown.created, shown.msecs = record.created, record.msecs
        return super().format(shown)


class Repeated:
    """An error that repeats while an outage lasts, logged once a period.

    A database gone for a minute logged the same ERROR every half second
    from the sender and the dispatcher each. The first failure is logged
    at once; later ones at most once every `every` seconds, saying how many
    were not shown; the first success after them says the outage ended.
    """

    def __init__(
        self, logger: logging.Logger, every: float = 30.0, level: int = logging.ERROR
    ) -> None:
        self.logger = logger
        self.every = every
        self.level = level
        self._next_at = 0.0
        self._hidden = 0
        self._failing = False

    def failed(self, message: str, *args: object, exc_info: bool = False) -> None:
        """Count one failure; log it (with the traceback being handled if
        `exc_info`) if its period has come."""
        self._failing = True
        now = time.monotonic()
        if now < self._next_at:
            self._hidden += 1
            return
        if self._hidden:
            message += " (%d more like it since the last line)"
            args = (*args, self._hidden)
        self.logger.log(self.level, message, *args, exc_info=exc_info)
        self._next_at = now + self.every
        self._hidden = 0

    def succeeded(self, message: str) -> None:
        """Say once that the failures stopped, if there were any."""
        if not self._failing:
            return
        self._failing = False
        self._next_at = 0.0
        self._hidden = 0
        self.logger.warning(message)
