"""Business data: named SQL queries against the deployment's own database.

Tracmin keeps drivers, trucks, trips and guides in its own database; each
deployment maps the flows onto its schema by writing the queries in
`config.yaml` (`business.queries`), never by changing Python. Queries use
`:name` placeholders and every value is bound by the driver, never pasted
into the SQL text.

The driver is chosen by the URL's scheme. SQLite (the demo) runs through
the stdlib on one thread of its own; a server database plugs in as another
`BusinessDriver` registered in `DRIVERS`.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bot.errors import TracbotError

log = logging.getLogger("tracbot.business")

T = TypeVar("T")
Row = dict[str, Any]


class BusinessError(TracbotError):
    """A business query is unknown, failed, or took too long."""


class BusinessDriver(abc.ABC):
    """Runs SQL with named parameters against one business database."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect."""

    @abc.abstractmethod
    async def fetch(self, sql: str, params: Mapping[str, Any]) -> list[Row]:
        """Run a query and return its rows as dicts keyed by column name."""

    @abc.abstractmethod
    async def execute(self, sql: str, params: Mapping[str, Any]) -> int:
        """Run a statement in its own transaction; return the rows changed."""

    def interrupt(self) -> None:  # noqa: B027 - optional for a driver
        """Stop the statement running now (after a timeout), if the driver can."""


class SqliteDriver(BusinessDriver):
    """`sqlite:///path.db`, through the stdlib on a single thread."""

    def __init__(self, url: str) -> None:
        self.path = url.removeprefix("sqlite://").removeprefix("/") or ":memory:"
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tracbot-business")
        await self._run(self._connect)

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._run(self._disconnect)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def fetch(self, sql: str, params: Mapping[str, Any]) -> list[Row]:
        return await self._run(self._fetch, sql, params)

    async def execute(self, sql: str, params: Mapping[str, Any]) -> int:
        return await self._run(self._execute, sql, params)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise BusinessError("the business database is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise BusinessError(f"sqlite: {exc}") from exc

    def _connect(self) -> None:
        if self.path != ":memory:" and not Path(self.path).exists():
            raise BusinessError(f"business database {self.path} does not exist")
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=5000")
        self._db = db

    def interrupt(self) -> None:
        # sqlite3's interrupt is the one call safe from another thread.
        if self._db is not None:
            self._db.interrupt()

    def _disconnect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _fetch(self, sql: str, params: Mapping[str, Any]) -> list[Row]:
        assert self._db is not None
        return [dict(row) for row in self._db.execute(sql, dict(params))]

    def _execute(self, sql: str, params: Mapping[str, Any]) -> int:
        assert self._db is not None
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            changed = db.execute(sql, dict(params)).rowcount
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return changed


def _odbc(url: str) -> BusinessDriver:
    # Imported on use: only an ODBC deployment needs aioodbc and unixODBC.
    from bot.business.odbc import OdbcDriver

    return OdbcDriver(url)


DRIVERS: dict[str, Callable[[str], BusinessDriver]] = {
    "sqlite": SqliteDriver,
    "odbc": _odbc,
}


def create_driver(url: str) -> BusinessDriver:
    """Return an unopened driver for a business database URL.

    Raises:
        BusinessError: no driver is registered for the URL's scheme.
    """
    scheme = url.split(":", 1)[0].lower()
    factory = DRIVERS.get(scheme)
    if factory is None:
        known = ", ".join(sorted(DRIVERS))
        raise BusinessError(
            f"business url {url!r}: no driver for {scheme!r} (known: {known})"
        )
    return factory(url)


class BusinessData:
    """The named queries of a deployment, run with bound parameters."""

    def __init__(
        self,
        driver: BusinessDriver,
        queries: Mapping[str, str],
        timeout: float = 5.0,
    ) -> None:
        self.driver = driver
        self.queries = dict(queries)
        self.timeout = timeout

    async def open(self) -> None:
        await self.driver.open()

    async def close(self) -> None:
        await self.driver.close()

    def has(self, name: str) -> bool:
        """Whether the deployment configured a query of this name."""
        return name in self.queries

    async def rows(self, name: str, /, **params: Any) -> list[Row]:
        """Run a named query and return all its rows."""
        return await self._timed(name, self.driver.fetch, params)

    async def row(self, name: str, /, **params: Any) -> Row | None:
        """Run a named query and return its first row, or None."""
        found = await self.rows(name, **params)
        return found[0] if found else None

    async def execute(self, name: str, /, **params: Any) -> int:
        """Run a named statement (an insert, an update); return rows changed."""
        return await self._timed(name, self.driver.execute, params)

    async def _timed(
        self, name: str, run: Callable[..., Any], params: dict[str, Any]
    ) -> Any:
        sql = self.queries.get(name)
        if sql is None:
            raise BusinessError(f"business query {name!r} is not configured")

        started = time.monotonic()
        try:
            # asyncio.timeout, not wait_for: no extra task per query.
            async with asyncio.timeout(self.timeout):
                result = await run(sql, params)
        except TimeoutError:
            # The thread would go on running it, holding up every later query.
            self.driver.interrupt()
            raise BusinessError(
                f"business query {name!r} took more than {self.timeout}s"
            ) from None
        except BusinessError as exc:
            raise BusinessError(f"business query {name!r} failed: {exc}") from exc
        ms = (time.monotonic() - started) * 1000
        log.debug("query done name=%s ms=%.1f", name, ms)
        return result
