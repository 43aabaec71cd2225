"""Stored rows into the dataclasses of storage.base, the same for every backend.

Rows are read by column name (asyncpg records, sqlite3 rows and ODBC dicts
all allow it). Only times differ between backends: SQLite keeps ISO text,
the ODBC schemas naive UTC, asyncpg hands back aware datetimes. So each
backend passes its own `when`, which turns a stored time into an aware UTC
datetime; everything else is read here once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from storage import jsontext
from storage.base import Conversation, HistoryEntry, InboxEvent, Link, OutboxItem

When = Callable[[Any], datetime | None]


def as_is(value: datetime | None) -> datetime | None:
    """The `when` of a driver that already returns aware datetimes."""
    return value


def inbox_event(row: Any, when: When) -> InboxEvent:
    return InboxEvent(
        id=int(row["id"]),
        key=row["key"],
        kind=row["kind"],
        wa_id=row["wa_id"],
        phone_number_id=row["phone_number_id"],
        payload=json.loads(row["payload"]),
        received_at=when(row["received_at"]),
    )


def conversation(row: Any, when: When) -> Conversation:
    return Conversation(
        wa_id=row["wa_id"],
        flow=row["flow"],
        state=row["state"],
        slots=json.loads(row["slots"]),
        flow_version=row["flow_version"],
        last_inbound_at=when(row["last_inbound_at"]),
        deadline=when(row["deadline"]),
    )


def outbox_item(row: Any, when: When, taken: bool = False) -> OutboxItem:
    """The item of `row`; `taken`: as the sender's take marked it, after the
    row was read (status `sending`, one attempt more)."""
    return OutboxItem(
        id=int(row["id"]),
        wa_id=row["wa_id"],
        phone_number_id=row["phone_number_id"],
        kind=row["kind"],
        body=jsontext.loads_message(row["body"]),
        status="sending" if taken else row["status"],
        attempts=int(row["attempts"]) + taken,
        wamid=row["wamid"],
        created_at=when(row["created_at"]),
        fallback=_message_or_none(row["fallback"]),
        fallback_of=_int_or_none(row["fallback_of"]),
        error_code=_int_or_none(row["error_code"]),
        error_detail=row["error_detail"],
    )


def history_entry(row: Any, when: When) -> HistoryEntry:
    return HistoryEntry(
        direction=row["direction"],
        id=int(row["id"]),
        body=json.loads(row["body"]),
        status=row["status"],
        wamid=row["wamid"],
        error_code=_int_or_none(row["error_code"]),
        error_detail=row["error_detail"],
        at=when(row["at"]),
        replaces=_int_or_none(row["fallback_of"]),
    )


def link(row: Any, when: When) -> Link:
    return Link(
        wa_id=row["wa_id"],
        driver_id=row["driver_id"],
        rut=row["rut"],
        name=row["name"],
        role=row["role"],
        method=row["method"],
        linked_at=when(row["linked_at"]),
    )


def _message_or_none(value: str | None) -> Any:
    return None if value is None else jsontext.loads_message(value)


def _json_or_none(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
