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
]


def create_store(url: str, **options: object) -> Store:
    """Return an unopened store for a storage URL.

    Raises:
        ValueError: the URL's scheme names no backend.
    """
    scheme = url.split(":", 1)[0].lower()

    # Imported here so that a deployment needs only its own backend's driver.
    if scheme == "sqlite":
        from storage.sqlite import SqliteStore

        return SqliteStore(url, **options)
    if scheme in ("postgres", "postgresql"):
        from storage.postgres import PostgresStore

        return PostgresStore(url, **options)
    if scheme == "odbc":
        from storage.odbc import OdbcStore

        return OdbcStore(url, **options)
    raise ValueError(
        f"storage url {url!r}: unknown scheme {scheme!r} "
        "(expected sqlite, postgresql or odbc)"
    )
