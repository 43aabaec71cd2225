"""Business data through ODBC (aioodbc): `odbc:<ODBC connection string>`.

Tracmin's data lives in SQL Server; any database with an ODBC driver works
(our tests use PostgreSQL through psqlODBC). The named queries of
`config.yaml` keep their `:name` placeholders: they are rewritten to ODBC's
`?` markers, with the values bound in marker order, never pasted into SQL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import aioodbc
import pyodbc

from bot.business.queries import BusinessDriver, BusinessError, Row

# A string literal (skipped, so that ':' inside one stays text), a `::`
# cast (PostgreSQL), or a `:name` placeholder.
_TOKENS = re.compile(r"'(?:[^']|'')*'|::|:([A-Za-z_][A-Za-z0-9_]*)")


def to_markers(sql: str, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """Rewrite `:name` placeholders to `?` and list the values in order.

    Raises:
        BusinessError: the SQL names a parameter that was not given.
    """
    values: list[Any] = []

    def marker(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)
        if name not in params:
            raise BusinessError(f"parameter :{name} has no value")
        values.append(params[name])
        return "?"

    return _TOKENS.sub(marker, sql), values


class OdbcDriver(BusinessDriver):
    """Named business queries through an ODBC driver; see the module docstring.

    Args:
        url: `odbc:` followed by an ODBC connection string.
        pool_max: connections at most.

    A query over `business.timeout_seconds` is abandoned by `BusinessData`;
    its worker thread finishes it in the background (psqlODBC supports no
    connection timeout attribute to cancel it on the server).
    """

    def __init__(self, url: str, pool_max: int = 4) -> None:
        if not url.lower().startswith("odbc:"):
            raise BusinessError("an odbc business url starts with 'odbc:'")
        self.dsn = url[len("odbc:") :].removeprefix("//")
        self.pool_max = pool_max
        self._pool: aioodbc.Pool | None = None

    async def open(self) -> None:
        try:
            self._pool = await aioodbc.create_pool(
                dsn=self.dsn, minsize=1, maxsize=self.pool_max, autocommit=False
            )
        except pyodbc.Error as exc:
            raise BusinessError(f"odbc: cannot connect: {_message(exc)}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()
            await pool.wait_closed()

    async def fetch(self, sql: str, params: Mapping[str, Any]) -> list[Row]:
        async def work(cursor: Any) -> list[Row]:
            if cursor.description is None:
                return []
            names = [column[0] for column in cursor.description]
            rows = await cursor.fetchall()
            return [dict(zip(names, row, strict=True)) for row in rows]

        return await self._run(sql, params, work)

    async def execute(self, sql: str, params: Mapping[str, Any]) -> int:
        async def work(cursor: Any) -> int:
            return cursor.rowcount

        return await self._run(sql, params, work)

    async def _run(self, sql: str, params: Mapping[str, Any], work: Any) -> Any:
        if self._pool is None:
            raise BusinessError("odbc: the business database is not open")
        text, values = to_markers(sql, params)
        async with self._pool.acquire() as conn:
            try:
                async with conn.cursor() as cursor:
                    await cursor.execute(text, *values)
                    result = await work(cursor)
                await conn.commit()
                return result
            except pyodbc.Error as exc:
                await conn.rollback()
                raise BusinessError(f"odbc: {_message(exc)}") from exc


def _message(exc: pyodbc.Error) -> str:
    return str(exc.args[1] if len(exc.args) > 1 else exc)
