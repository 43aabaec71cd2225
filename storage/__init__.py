"""Storage backends of tracbot, chosen by URL.

`sqlite:///var/tracbot.db` is the embedded default, `postgresql://…` uses
asyncpg, and `odbc:<connection string>` uses aioodbc (SQL Server in
production, any ODBC driver in tests).
"""

from __future__ import annotations

from storage.base import (
    Conversation,
    InboxEvent,
    NewInboxEvent,
    NewOutbound,
    OutboxItem,
    Store,
)

__all__ = [
    "Conversation",
    "InboxEvent",
    "NewInboxEvent",
    "NewOutbound",
    "OutboxItem",
    "Store",
    "create_store",
    "migrate",
]


# Options only the server backends have: a pool of connections.
POOL_OPTIONS = frozenset(
    {"pool_min", "pool_max", "acquire_timeout", "statement_timeout"}
)
# Options only the embedded backend has (see SqliteStore).
FILE_OPTIONS = frozenset({"companion"})


def create_store(url: str, **options: object) -> Store:
    """Return an unopened store for a storage URL.

    `options` are the backend's keyword arguments (`migrate`, and for the
    server backends `pool_min`, `pool_max`, `acquire_timeout`,
    `statement_timeout`); the embedded backend has no pool, so it ignores
    the pool options, and the server backends ignore `companion` (a second
    store of one process on the same file, see SqliteStore).

    Raises:
        ValueError: the URL's scheme names no backend.
    """
    scheme = url.split(":", 1)[0].lower()

    # Imported here so that a deployment needs only its own backend's driver.
    if scheme == "sqlite":
        from storage.sqlite import SqliteStore

        return SqliteStore(url, **_without(options, POOL_OPTIONS))
    if scheme in ("postgres", "postgresql"):
        from storage.postgres import PostgresStore

        return PostgresStore(url, **_without(options, FILE_OPTIONS))
    if scheme == "odbc":
        from storage.odbc import OdbcStore

        return OdbcStore(url, **_without(options, FILE_OPTIONS))
    raise ValueError(
        f"storage url {url!r}: unknown scheme {scheme!r} "
        "(expected sqlite, postgresql or odbc)"
    )


def _without(options: dict[str, object], names: frozenset[str]) -> dict[str, object]:
    return {k: v for k, v in options.items() if k not in names}


async def migrate(url: str, **options: object) -> list[str]:
    """Apply a database's pending migrations; return the names applied.

    Raises:
        StorageError: the database cannot be reached or a migration failed
            (a failed migration is rolled back whole).
    """
    store = create_store(url, **{**options, "migrate": "auto"})
    async with store:
        return list(store.applied)
