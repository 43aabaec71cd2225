"""The storage contract, run against every backend.

Each test runs three times: on a SQLite file, on PostgreSQL through asyncpg
and on PostgreSQL through unixODBC and psqlODBC, each time on an empty
database of its own.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from storage import Conversation, NewInboxEvent, NewOutbound, Store, create_store
from storage.errors import StorageError

PHONE_NUMBER_ID = "106540352242922"
SANTIAGO_SUMMER = timezone(timedelta(hours=-3))

# Accents, ñ, a flag, a family emoji joined by zero-width joiners, a NUL.
LATIN = "Guía Nº 4521, camión ñandú: «listo» "
SAMPLE = LATIN + "🇨🇱👨\u200d👩\u200d👧 ✅ \u0000 "


def event(key: str, wa_id: str | None = "56911111111", **payload) -> NewInboxEvent:
    return NewInboxEvent(
        key=key,
        kind="message",
        wa_id=wa_id,
        phone_number_id=PHONE_NUMBER_ID,
        payload={"id": key, **payload},
    )


def reply(wa_id: str = "56911111111", text: str = "Hola") -> NewOutbound:
    return NewOutbound(
        wa_id=wa_id,
        phone_number_id=PHONE_NUMBER_ID,
        kind="message",
        body={"type": "text", "text": {"body": text}},
    )


async def statuses(store: Store) -> dict[int, str]:
    return {item.id: item.status for item in await store.outbox_items()}


def assert_utc(value: datetime | None) -> None:
    assert value is not None
    assert value.utcoffset() == timedelta(0), value


# Inbox


async def test_add_events_ignores_known_keys_and_counts_new(store: Store) -> None:
    assert await store.add_events([event("wamid.a"), event("wamid.b")]) == 2
    assert await store.add_events([event("wamid.b"), event("wamid.c")]) == 1
    assert await store.add_events([event("wamid.d"), event("wamid.d")]) == 1
    assert await store.add_events([]) == 0

    assert await store.pending_count() == 4


async def test_pending_phones_lists_the_longest_waiting_first(store: Store) -> None:
    await store.add_events(
        [event("e1", "561"), event("e2", "562"), event("e3", "561")]
        + [event("e4", "563")]
    )
    assert await store.pending_phones() == ["561", "562", "563"]
    assert await store.pending_phones(limit=2) == ["561", "562"]

    # Once 561's first event is done, its wait starts at its second event.
    first = await store.next_event("561")
    await store.commit_step(first.id, None, [])
    assert await store.pending_phones() == ["562", "561", "563"]


async def test_events_without_a_phone_wait_under_the_empty_phone(
    store: Store,
) -> None:
    await store.add_events([event("notice.1", wa_id=None)])

    assert await store.pending_phones() == [""]
    pending = await store.next_event("")
    assert pending is not None
    assert pending.key == "notice.1"
    assert pending.wa_id is None


async def test_next_event_returns_a_phones_events_in_insertion_order(
    store: Store,
) -> None:
    before = datetime.now(UTC)
    await store.add_events([event("e1", "561", text={"body": "ESTADO"})])
    await store.add_events([event("e2", "562"), event("e3", "561")])
    after = datetime.now(UTC)

    first = await store.next_event("561")
    assert first is not None
    assert (first.key, first.kind, first.wa_id) == ("e1", "message", "561")
    assert first.phone_number_id == PHONE_NUMBER_ID
    assert first.payload == {"id": "e1", "text": {"body": "ESTADO"}}
    assert_utc(first.received_at)
    assert before - timedelta(seconds=1) <= first.received_at <= after

    assert await store.next_event("561") == first
    await store.commit_step(first.id, None, [])
    second = await store.next_event("561")
    assert second is not None and second.key == "e3"
    await store.commit_step(second.id, None, [])
    assert await store.next_event("561") is None
    assert await store.next_event("599") is None
    assert await store.pending_count() == 1


# Conversations and steps


async def test_commit_step_saves_conversation_queues_replies_marks_done(
    store: Store,
) -> None:
    await store.add_events([event("e1")])
    pending = await store.next_event("56911111111")
    conversation = Conversation(
        wa_id="56911111111",
        flow="vincular",
        state="pedir_rut",
        slots={"intentos": 1, "rut": None, "listas": [1, "dos"]},
        flow_version="3",
        last_inbound_at=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    )

    ids = await store.commit_step(
        pending.id, conversation, [reply(text="uno"), reply(text="dos")]
    )

    assert len(ids) == 2 and ids[0] < ids[1]
    assert await store.load_conversation("56911111111") == conversation
    items = await store.outbox_items("56911111111")
    assert [item.id for item in items] == ids
    assert [item.body["text"]["body"] for item in items] == ["uno", "dos"]
    assert {item.status for item in items} == {"queued"}
    assert await store.next_event("56911111111") is None
    assert await store.pending_count() == 0


async def test_commit_step_without_conversation_keeps_the_stored_one(
    store: Store,
) -> None:
    await store.add_events([event("e1"), event("e2")])
    saved = Conversation(wa_id="56911111111", flow="estado", state="inicio")
    first = await store.next_event("56911111111")
    await store.commit_step(first.id, saved, [])

    second = await store.next_event("56911111111")
    assert await store.commit_step(second.id, None, []) == []

    assert await store.load_conversation("56911111111") == saved
    assert await store.load_conversation("56900000000") is None


async def test_commit_step_keeps_nothing_when_the_conversation_fails(
    store: Store,
) -> None:
    await store.add_events([event("e1"), event("e2")])
    saved = Conversation(wa_id="56911111111", flow="estado", state="inicio")
    first = await store.next_event("56911111111")
    await store.commit_step(first.id, saved, [reply()])
    second = await store.next_event("56911111111")

    broken = Conversation(wa_id="56911111111", state="fin", slots={"x": object()})
    with pytest.raises((TypeError, StorageError)):
        await store.commit_step(second.id, broken, [reply(text="perdida")])

    assert await store.load_conversation("56911111111") == saved
    assert len(await store.outbox_items()) == 1
    assert await store.next_event("56911111111") == second


async def test_commit_step_keeps_nothing_when_a_later_reply_fails(
    store: Store,
) -> None:
    # The conversation and the first reply are written before the second
    # reply breaks a NOT NULL column: the database must undo them.
    await store.add_events([event("e1")])
    pending = await store.next_event("56911111111")
    conversation = Conversation(wa_id="56911111111", flow="estado", state="fin")
    bad = NewOutbound("56911111111", None, "message", {"type": "text"})

    with pytest.raises(Exception):  # noqa: B017 - types differ per driver
        await store.commit_step(pending.id, conversation, [reply(), bad])

    assert await store.load_conversation("56911111111") is None
    assert await store.outbox_items() == []
    assert await store.next_event("56911111111") == pending


# Outbox


async def test_enqueue_queues_replies_no_event_caused(store: Store) -> None:
    before = datetime.now(UTC)
    ids = await store.enqueue([reply("561", "a"), reply("562", "b")])

    items = await store.outbox_items()
    assert [item.id for item in items] == ids
    assert [(i.wa_id, i.status, i.attempts, i.wamid) for i in items] == [
        ("561", "queued", 0, None),
        ("562", "queued", 0, None),
    ]
    assert items[0].body == {"type": "text", "text": {"body": "a"}}
    assert items[0].phone_number_id == PHONE_NUMBER_ID
    assert_utc(items[0].created_at)
    assert items[0].created_at >= before - timedelta(seconds=1)
    assert [item.id for item in await store.outbox_items("562")] == ids[1:]


def replies_to_many_phones(count: int) -> list[NewOutbound]:
    # One phone each: whether a phone's later items wait for its earlier
    # ones is another question than taking each item once.
    return [reply(f"569{n:08d}", str(n)) for n in range(count)]


async def test_due_outbox_takes_each_item_once(store: Store) -> None:
    ids = await store.enqueue(replies_to_many_phones(3))

    taken = await store.due_outbox()

    assert [item.id for item in taken] == ids
    assert {(item.status, item.attempts) for item in taken} == {("sending", 1)}
    assert await store.due_outbox() == []
    assert set((await statuses(store)).values()) == {"sending"}


async def test_due_outbox_concurrent_callers_never_share_an_item(
    store: Store, store_url: str
) -> None:
    ids = await store.enqueue(replies_to_many_phones(60))

    # A second store has its own connections, as a second process would.
    async with create_store(store_url) as other:
        batches = await asyncio.gather(
            *(s.due_outbox(limit=7) for _ in range(6) for s in (store, other))
        )

    taken = [item.id for batch in batches for item in batch]
    assert len(taken) == len(set(taken))
    assert sorted(taken) == ids


async def test_mark_retry_puts_an_item_back_for_later(store: Store) -> None:
    [item_id] = await store.enqueue([reply()])
    await store.due_outbox()

    await store.mark_retry(item_id, datetime.now(UTC) + timedelta(hours=1), "429")
    assert await store.due_outbox() == []
    assert (await statuses(store))[item_id] == "queued"

    await store.mark_retry(item_id, datetime.now(UTC) - timedelta(seconds=1), "x")
    [again] = await store.due_outbox()
    assert (again.id, again.attempts) == (item_id, 2)


async def test_mark_sent_records_the_wamid(store: Store) -> None:
    [item_id] = await store.enqueue([reply()])
    await store.due_outbox()

    await store.mark_sent(item_id, "wamid.HBgL", "accepted")

    [item] = await store.outbox_items()
    assert (item.status, item.wamid) == ("accepted", "wamid.HBgL")
    assert await store.due_outbox() == []


async def test_mark_failed_ends_an_item(store: Store) -> None:
    [item_id] = await store.enqueue([reply()])
    await store.due_outbox()

    await store.mark_failed(item_id, 131047, "Re-engagement message")

    assert (await statuses(store))[item_id] == "failed"
    assert await store.due_outbox() == []


async def test_apply_status_only_moves_forward(store: Store) -> None:
    [item_id] = await store.enqueue([reply()])
    await store.due_outbox()
    await store.mark_sent(item_id, "wamid.1", "accepted")

    for status in ("sent", "read", "delivered", "sent"):
        assert await store.apply_status("wamid.1", status) is True
    assert (await statuses(store))[item_id] == "read"

    assert await store.apply_status("wamid.unknown", "read") is False


async def test_apply_status_accepts_delivery_after_a_failure(store: Store) -> None:
    [item_id] = await store.enqueue([reply()])
    await store.mark_sent(item_id, "wamid.2", "accepted")

    assert await store.apply_status("wamid.2", "failed", 131026, "Undeliverable")
    assert (await statuses(store))[item_id] == "failed"
    assert await store.apply_status("wamid.2", "sent")
    assert (await statuses(store))[item_id] == "failed"
    assert await store.apply_status("wamid.2", "delivered")
    assert (await statuses(store))[item_id] == "delivered"


# Values


async def test_text_round_trips_exactly(store: Store) -> None:
    text = (SAMPLE * 200)[:4800]
    assert len(text) == 4800

    await store.add_events([event("e1", text={"body": text})])
    pending = await store.next_event("56911111111")
    conversation = Conversation(wa_id="56911111111", slots={"nota": text, text: 1})
    [item_id] = await store.commit_step(pending.id, conversation, [reply(text=text)])

    assert pending.payload["text"]["body"] == text
    assert (await store.load_conversation("56911111111")).slots["nota"] == text
    [item] = await store.outbox_items()
    assert (item.id, item.body["text"]["body"]) == (item_id, text)


async def test_times_are_aware_utc_whatever_the_server_timezone(
    store_url: str, request: pytest.FixtureRequest
) -> None:
    if not store_url.startswith("sqlite"):
        request.getfixturevalue("postgres_db").set_timezone("America/Santiago")
    stored = datetime(2024, 3, 9, 23, 30, 15, 123456, tzinfo=SANTIAGO_SUMMER)
    deadline = datetime(2024, 7, 1, 4, 0, tzinfo=UTC)

    async with create_store(store_url) as store:
        await store.add_events([event("e1")])
        pending = await store.next_event("56911111111")
        conversation = Conversation(
            wa_id="56911111111", last_inbound_at=stored, deadline=deadline
        )
        [item_id] = await store.commit_step(pending.id, conversation, [reply()])
        loaded = await store.load_conversation("56911111111")

        # Due times compare in UTC too: an hour from now in Santiago's
        # offset is still in the future.
        await store.due_outbox()
        later = (datetime.now(UTC) + timedelta(hours=1)).astimezone(SANTIAGO_SUMMER)
        await store.mark_retry(item_id, later, "later")
        assert await store.due_outbox() == []

    assert loaded.last_inbound_at == stored
    assert loaded.deadline == deadline
    assert_utc(loaded.last_inbound_at)
    assert_utc(loaded.deadline)
    assert_utc(pending.received_at)
    assert abs(pending.received_at - datetime.now(UTC)) < timedelta(minutes=1)
