"""Webhooks that could not be stored: what /readyz and the log say of them.

While the database refuses writes (locked by another process, gone, full),
every webhook is answered 503 and Meta retries it, so nothing is lost; the
operator needs to know it is happening, why, and when it stopped, without
a line per webhook: a lock at 500 webhooks/s wrote 500 identical lines a
second, and a lock that comes and goes wrote a "stored again" line each
time it went. So the log gets at most one line of either kind a period:
the first refusal at once (unless a line was written less than a period
ago), later ones with a count, and "stored again" once the database has
taken webhooks for a whole period.
"""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger("tracbot.webhook")

# Seconds /readyz reports a webhook that could not be stored; Meta's next
# retry, or the next message, tries again.
PROBLEM_SECONDS = 30.0
# At most one log line about it this often.
REPORT_SECONDS = 10.0


class StoreTrouble:
    """Counts webhooks answered 503 for storage, and reports them."""

    def __init__(self) -> None:
        # Why the last webhook could not be stored; None once one is again.
        self.error: str | None = None
        self._failed_at = 0.0
        # Refused since the last "stored again" line.
        self.refused = 0
        self._next_line_at = 0.0
        self._recovery: asyncio.TimerHandle | None = None

    def failed(self, reason: str) -> None:
        """A webhook was answered 503 because it could not be stored."""
        now = time.monotonic()
        self.error = reason
        self._failed_at = now
        self.refused += 1
        if now >= self._next_line_at:
            self._next_line_at = now + REPORT_SECONDS
            log.error(
                "webhook not stored, answering 503 (Meta retries): %s; %d "
                "answered 503 so far (one line every %g s at most)",
                reason,
                self.refused,
                REPORT_SECONDS,
            )

    def stored(self) -> None:
        """A webhook was stored: say so once the trouble has been over a while."""
        if self.error is None:
            return
        self.error = None
        if self._recovery is None:
            loop = asyncio.get_running_loop()
            wait = max(0.0, self._next_line_at - time.monotonic())
            self._recovery = loop.call_later(wait, self._report_recovery)

    @property
    def problem(self) -> str | None:
        """Why the last webhook could not be stored, for a while after.

        Only a webhook stored again clears it; a server that a load balancer
        takes out of rotation for it gets no more webhooks, and would stay
        "not ready" long after the database came back.
        """
        if self.error is None:
            return None
        if time.monotonic() - self._failed_at > PROBLEM_SECONDS:
            return None
        return self.error

    def _report_recovery(self) -> None:
        self._recovery = None
        if self.error is not None:
            # Refused again meanwhile: the trouble goes on.
            return
        if time.monotonic() - self._failed_at < REPORT_SECONDS:
            # Stored again only briefly yet: look once more a period on.
            loop = asyncio.get_running_loop()
            self._recovery = loop.call_later(REPORT_SECONDS, self._report_recovery)
            return
        self._next_line_at = time.monotonic() + REPORT_SECONDS
        log.warning("webhooks stored again; %d answered 503 in all", self.refused)
        self.refused = 0
