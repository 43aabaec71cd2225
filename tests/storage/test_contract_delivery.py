"""The storage contract beyond the step: delivery, history, links, schema.

Each test runs on the three backends of conftest.py: SQLite, PostgreSQL
through asyncpg and PostgreSQL through unixODBC and psqlODBC.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from storage import Conversation, NewInboxEvent, NewOutbound, Store, create_store
from storage import migrate as migrate_url
from storage.base import DeliveryCounts, KeptAnswer, Keyed, Link
from storage.errors import EventDone, KeyInUse, StorageError
from storage.migrations import migrations

PHONE_NUMBER_ID = "106540352242922"
TEMPLATE = {"type": "template", "template": {"name": "mensaje_tracmin"}}


def event(key: str, wa_id: str = "561", kind: str = "message") -> NewInboxEvent:
    return NewInboxEvent(key, kind, wa_id, PHONE_NUMBER_ID, {"id": key})


def reply(wa_id: str, text: str, fallback: dict | None = None) -> NewOutbound:
    body = {"type": "text", "text": {"body": text}}
    return NewOutbound(wa_id, PHONE_NUMBER_ID, "message", body, fallback)


def texts(items) -> list[str]:
    return [item.body["text"]["body"] for item in items]


# The step


async def test_commit_step_refuses_a_replayed_event(store: Store) -> None:
    await store.add_events([event("e1")])
    pending = await store.next_event("561")
    await store.commit_step(pending.id, None, [reply("561", "una vez")])

    with pytest.raises(EventDone, match="not pending"):
        await store.commit_step(pending.id, None, [reply("561", "dos veces")])

    assert texts(await store.outbox_items()) == ["una vez"]


async def test_conversation_replies_are_taken_before_notifications(
    store: Store,
) -> None:
    # One queue by id made a driver's AYUDA wait behind thousands of queued
    # alerts (40 s behind 3,000 at 80 a second).
    await store.enqueue([reply(f"57{n}", f"aviso {n}") for n in range(5)])
    await store.add_events([event("e1", "561")])
    pending = await store.next_event("561")
    await store.commit_step(pending.id, None, [reply("561", "respuesta")])

    first = await store.due_outbox(limit=2)
    assert sorted(texts(first)) == ["aviso 0", "respuesta"]
    rest = await store.due_outbox(limit=10)
    assert texts(rest) == [f"aviso {n}" for n in range(1, 5)]


async def test_a_reply_does_not_wait_for_its_phones_notifications(
    store: Store,
) -> None:
    # A phone's reply waited behind every alert queued for that phone: an
    # admin flooded with 1,500 alerts waited 19 s for the answer to AYUDA.
    await store.enqueue([reply("561", f"aviso {n}") for n in range(3)])
    await store.add_events([event("e1", "561"), event("e2", "561")])
    for text in ("respuesta 1", "respuesta 2"):
        pending = await store.next_event("561")
        await store.commit_step(pending.id, None, [reply("561", text)])
    [later] = await store.enqueue([reply("561", "aviso tarde")])

    # The replies first, one at a time, in their order; the notifications
    # wait for every reply still to go (a second reply went out after the
    # alert queued before it), then leave in theirs.
    assert texts(await store.due_outbox(limit=10)) == ["respuesta 1"]
    assert await store.due_outbox(limit=10) == []
    items = {item.body["text"]["body"]: item for item in await store.outbox_items()}
    await store.mark_sent(items["respuesta 1"].id, "wamid.r1", "accepted")
    assert texts(await store.due_outbox(limit=10)) == ["respuesta 2"]
    await store.mark_sent(items["respuesta 2"].id, "wamid.r2", "accepted")
    for n in range(3):
        assert texts(await store.due_outbox(limit=10)) == [f"aviso {n}"]
        await store.mark_sent(items[f"aviso {n}"].id, f"wamid.a{n}", "accepted")
    assert [item.id for item in await store.due_outbox(limit=10)] == [later]


async def test_a_message_not_handled_yet_opens_the_window(store: Store) -> None:
    # A send just after a driver's first message, before the dispatcher had
    # handled it, saw the window closed and went as a paid template.
    assert await store.last_inbound(["561", "562"]) == {}
    await store.add_events([event("e1", "561"), event("s1", "562", kind="status")])
    found = await store.last_inbound(["561", "562"])
    assert list(found) == ["561"]
    assert abs((found["561"] - datetime.now(UTC)).total_seconds()) < 60

    # Handled, it is the conversation's to say (a reaction opens nothing).
    pending = await store.next_event("561")
    await store.commit_step(pending.id, None, [])
    assert await store.last_inbound(["561"]) == {}


async def test_expired_conversations_come_earliest_deadline_first(
    store: Store,
) -> None:
    now = datetime.now(UTC)
    await store.add_events([event(f"e{n}", f"56{n}") for n in range(4)])
    for n, minutes in enumerate((5, -1, -10, None)):
        pending = await store.next_event(f"56{n}")
        deadline = None if minutes is None else now + timedelta(minutes=minutes)
        conversation = Conversation(f"56{n}", "vincular", "pedir_rut", {}, None)
        conversation.deadline = deadline
        await store.commit_step(pending.id, conversation, [])

    expired = await store.expired_conversations(now)
    assert [c.wa_id for c in expired] == ["562", "561"]
    assert [c.wa_id for c in await store.expired_conversations(now, 1)] == ["562"]


# Outbox order and delivery


async def test_a_phones_later_items_wait_for_its_earlier_ones(store: Store) -> None:
    a1, a2, b1 = await store.enqueue(
        [reply("561", "a1"), reply("561", "a2"), reply("562", "b1")]
    )

    assert [i.id for i in await store.due_outbox()] == [a1, b1]
    assert await store.due_outbox() == []

    # A retry keeps a1 unfinished, so a2 still waits.
    await store.mark_retry(a1, datetime.now(UTC) - timedelta(seconds=1), "429")
    assert [i.id for i in await store.due_outbox()] == [a1]
    await store.mark_sent(a1, "wamid.a1", "accepted")
    assert [i.id for i in await store.due_outbox()] == [a2]

    # A failure ends an item: it holds nothing back.
    [b2] = await store.enqueue([reply("562", "b2")])
    await store.mark_failed(b1, 131026, "Undeliverable")
    assert [i.id for i in await store.due_outbox()] == [b2]


async def test_only_the_latest_take_of_an_item_may_renew_its_lease(
    store: Store,
) -> None:
    # The sender asks before a late send: an item whose lease ran out was
    # queued again, maybe taken again, and the old take must not send it.
    [a1] = await store.enqueue([reply("561", "a1")])
    [first] = await store.due_outbox()
    assert await store.renew_lease(a1, first.attempts) is True

    await store.mark_retry(a1, datetime.now(UTC) - timedelta(seconds=1), "lease")
    assert await store.renew_lease(a1, first.attempts) is False

    [second] = await store.due_outbox()
    assert second.attempts == first.attempts + 1
    assert await store.renew_lease(a1, first.attempts) is False
    assert await store.renew_lease(a1, second.attempts) is True

    await store.mark_sent(a1, "wamid.a1", "accepted")
    assert await store.renew_lease(a1, second.attempts) is False
    assert await store.renew_lease(404, 1) is False


async def test_an_item_given_back_is_queued_without_its_take_counted(
    store: Store,
) -> None:
    # A stop before the request left: restarts spent attempts that never
    # reached Meta, and `sender.max_attempts` gave up on unsent replies.
    [a1] = await store.enqueue([reply("561", "a1")])
    [taken] = await store.due_outbox()
    await store.give_back(a1, taken.attempts + 1, "stopped")  # not this take
    assert [i.status for i in await store.outbox_items()] == ["sending"]

    await store.give_back(a1, taken.attempts, "stopped")
    [item] = await store.outbox_items()
    assert (item.status, item.attempts) == ("queued", 0)
    [again] = await store.due_outbox()
    assert again.attempts == 1


async def test_an_item_given_back_for_later_waits_until_then(store: Store) -> None:
    # No connection to the Graph API: no attempt spent, and the item waits
    # for the next probe instead of being taken again at once.
    [a1] = await store.enqueue([reply("561", "a1")])
    [taken] = await store.due_outbox()
    later = datetime.now(UTC) + timedelta(seconds=0.5)
    await store.give_back(a1, taken.attempts, "connection refused", later)

    [item] = await store.outbox_items()
    assert (item.status, item.attempts) == ("queued", 0)
    assert await store.due_outbox() == []
    await store.give_back(a1, 0, "not this take", datetime.now(UTC))
    assert await store.due_outbox() == []

    await asyncio.sleep(0.6)
    [again] = await store.due_outbox()
    assert (again.id, again.attempts) == (a1, 1)


async def test_a_read_mark_holds_back_none_of_its_phones_messages(
    store: Store,
) -> None:
    read = NewOutbound("561", PHONE_NUMBER_ID, "read", {"message_id": "wamid.in"})
    mark, a1 = await store.enqueue([read, reply("561", "a1")])

    # Read marks are best effort: the reply leaves beside, not behind, one.
    assert [i.id for i in await store.due_outbox()] == [mark, a1]
    [a2] = await store.enqueue([reply("561", "a2")])
    await store.mark_retry(mark, datetime.now(UTC) - timedelta(seconds=1), "slow")
    await store.mark_sent(a1, "wamid.a1", "accepted")
    assert [i.id for i in await store.due_outbox()] == [mark, a2]


async def test_attempts_are_logged_per_item_in_order(store: Store) -> None:
    [item_id] = await store.enqueue([reply("561", "x")])
    await store.record_attempt(item_id, 1, "retry", 120, 130429, "rate limit")
    await store.record_attempt(item_id, 2, "accepted", 35)

    attempts = await store.attempts_of(item_id)

    assert [(a["attempt"], a["outcome"], a["ms"]) for a in attempts] == [
        (1, "retry", 120),
        (2, "accepted", 35),
    ]
    assert (attempts[0]["error_code"], attempts[0]["detail"]) == (130429, "rate limit")
    assert attempts[1]["error_code"] is None
    assert attempts[0]["at"].utcoffset() == timedelta(0)
    assert await store.attempts_of(item_id + 1000) == []


async def test_last_inbound_and_outbox_by_wamid(store: Store) -> None:
    wrote = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    await store.add_events([event("e1")])
    pending = await store.next_event("561")
    conversation = Conversation("561", last_inbound_at=wrote)
    [item_id] = await store.commit_step(pending.id, conversation, [reply("561", "x")])
    await store.mark_sent(item_id, "wamid.X", "accepted")

    assert await store.last_inbound(["561", "599"]) == {"561": wrote}
    assert await store.last_inbound([]) == {}
    found = await store.outbox_by_wamid("wamid.X")
    assert found is not None and (found.id, found.wa_id) == (item_id, "561")
    assert await store.outbox_by_wamid("wamid.unknown") is None


async def test_a_template_fallback_replaces_an_item_once(store: Store) -> None:
    with_fallback, without = await store.enqueue(
        [reply("561", "ventana", TEMPLATE), reply("562", "sin plantilla")]
    )
    [stored, _] = await store.outbox_items()
    assert stored.fallback == TEMPLATE and stored.fallback_of is None

    template = await store.add_fallback(with_fallback, replace=True)

    assert template is not None
    assert (template.status, template.attempts) == ("sending", 1)
    assert (template.body, template.fallback_of) == (TEMPLATE, with_fallback)
    assert template.wa_id == "561" and template.phone_number_id == PHONE_NUMBER_ID
    statuses = {i.id: i.status for i in await store.outbox_items()}
    assert statuses[with_fallback] == "replaced"
    assert await store.add_fallback(with_fallback, replace=True) is None
    assert await store.add_fallback(without, replace=False) is None

    # Found by the id its send answered: the item, then its template.
    found = await store.outbox_with_replacement(with_fallback)
    assert [(i.id, i.status) for i in found] == [
        (with_fallback, "replaced"),
        (template.id, "sending"),
    ]
    assert [i.id for i in await store.outbox_with_replacement(without)] == [without]
    assert await store.outbox_with_replacement(template.id + 100) == []


async def test_a_fallback_after_a_failure_is_queued(store: Store) -> None:
    [item_id] = await store.enqueue([reply("561", "tarde", TEMPLATE)])
    await store.due_outbox()
    await store.mark_sent(item_id, "wamid.F", "accepted")
    await store.apply_status("wamid.F", "failed", 131047, "Re-engagement message")

    template = await store.add_fallback(item_id, replace=False)

    assert template is not None and template.status == "queued"
    [item, queued] = await store.outbox_items()
    assert (item.status, item.error_code) == ("failed", 131047)
    assert item.error_detail == "Re-engagement message"
    assert queued.id == template.id
    assert [i.id for i in await store.due_outbox()] == [template.id]


# History and metrics


async def test_history_pages_a_phones_messages_newest_first(store: Store) -> None:
    await store.add_events([event("in.1"), event("read.1", kind="status")])
    first = await store.next_event("561")
    read_mark = NewOutbound("561", PHONE_NUMBER_ID, "read", {"message_id": "in.1"})
    await store.commit_step(first.id, None, [read_mark, reply("561", "hola")])
    await store.add_events([event("in.2"), event("other", wa_id="562")])
    await store.enqueue([reply("561", "aviso")])

    total, page = await store.history("561", limit=3, offset=0)

    assert total == 4
    assert [(e.direction, e.status) for e in page] == [
        ("out", "queued"),
        ("in", "received"),
        ("out", "queued"),
    ]
    assert page[0].body["text"]["body"] == "aviso"
    assert page[1].wamid == "in.2" and page[1].body == {"id": "in.2"}
    assert all(e.at.utcoffset() == timedelta(0) for e in page)
    assert page[0].at >= page[1].at >= page[2].at

    total, rest = await store.history("561", limit=3, offset=3)
    assert total == 4
    assert [(e.direction, e.wamid) for e in rest] == [("in", "in.1")]
    assert await store.history("599", 10, 0) == (0, [])


async def test_delivery_counts_and_queue_stats(store: Store) -> None:
    start = datetime.now(UTC) - timedelta(minutes=1)
    ids = await store.enqueue([reply(f"56{n}", str(n)) for n in range(5)])
    await store.due_outbox()
    for n, status in enumerate(("sent", "delivered", "read")):
        await store.mark_sent(ids[n], f"wamid.{n}", "accepted")
        await store.apply_status(f"wamid.{n}", status)
    await store.mark_failed(ids[3], 131026, "Undeliverable")
    await store.mark_retry(ids[4], datetime.now(UTC), "timeout")
    await store.add_events([event("e1"), event("e2", "562"), event("s", kind="x")])
    end = datetime.now(UTC) + timedelta(minutes=1)

    counts = await store.delivery_counts(start, end)

    assert counts == DeliveryCounts(
        total=5, queued=1, sent=3, delivered=2, read=1, failed=1
    )
    assert await store.delivery_counts(end, end + timedelta(hours=1)) == (
        DeliveryCounts()
    )
    assert await store.inbound_count(start, end) == 2
    stats = await store.queue_stats()
    assert (stats.inbox_pending, stats.outbox_queued) == (3, 1)
    assert stats.inbox_oldest_at is not None
    assert abs(stats.inbox_oldest_at - datetime.now(UTC)) < timedelta(minutes=1)


# Account links


def link(wa_id: str, driver_id: str, name: str = "José Ñúñez 🚚") -> Link:
    linked_at = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    return Link(wa_id, driver_id, "12345678-5", name, "driver", "rut", linked_at)


async def test_links_are_saved_replaced_and_moved(store: Store) -> None:
    await store.save_link(link("561", "d1"))
    assert await store.get_link("561") == link("561", "d1")
    assert await store.link_of_driver("d1") == link("561", "d1")
    assert await store.get_link("562") is None

    await store.save_link(link("561", "d2", "Otra"))
    assert await store.get_link("561") == link("561", "d2", "Otra")
    assert await store.link_of_driver("d1") is None

    # The new number's own link gives way to the account that moved there.
    await store.save_link(link("563", "d3"))
    assert await store.move_link("561", "563") is True
    assert await store.get_link("561") is None
    assert (await store.get_link("563")).driver_id == "d2"
    assert await store.move_link("561", "564") is False


async def test_a_link_is_removed_once(store: Store) -> None:
    await store.save_link(link("561", "d1"))
    await store.save_link(link("562", "d2"))

    assert await store.remove_link("561") is True
    assert await store.get_link("561") is None
    assert await store.link_of_driver("d1") is None
    assert await store.remove_link("561") is False
    assert await store.get_link("562") == link("562", "d2")


async def test_a_driver_has_one_phone(store: Store) -> None:
    await store.save_link(link("561", "d1"))

    with pytest.raises(StorageError):
        await store.save_link(link("562", "d1"))
    assert await store.get_link("562") is None


async def test_failed_link_attempts_count_since_a_time(store: Store) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    # A name shown (found) counts; the "no" after it (denied) and a link
    # made (ok) do not.
    for outcome in ("invalid", "unknown", "ok", "found", "denied", "taken"):
        await store.add_link_attempt("561", "11111111-1", outcome)
    await store.add_link_attempt("562", "11111111-1", "invalid")

    assert await store.failed_link_attempts("561", before) == 4
    assert await store.failed_link_attempts("562", before) == 1
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert await store.failed_link_attempts("561", later) == 0


# Schema


async def test_migrate_refuse_names_the_pending_migrations(store_url: str) -> None:
    versions = [m.name for m in migrations("sqlite")]

    with pytest.raises(StorageError, match="tracbot migrate") as refused:
        await create_store(store_url, migrate="refuse").open()
    assert versions[-1] in str(refused.value)

    assert len(await migrate_url(store_url)) == len(versions)
    assert await migrate_url(store_url) == []
    async with create_store(store_url, migrate="refuse") as store:
        assert store.applied == []
        assert await store.pending_count() == 0


async def test_a_conversation_moves_to_a_new_number_unless_it_is_busy(
    store: Store,
) -> None:
    for key, wa_id in (("e1", "561"), ("e2", "563")):
        await store.add_events([event(key, wa_id)])
        pending = await store.next_event(wa_id)
        conversation = Conversation(wa_id, "vincular", "pedir_rut", {"a": 1}, "v1")
        await store.commit_step(pending.id, conversation, [])

    assert await store.move_conversation("561", "562") is True
    assert await store.load_conversation("561") is None
    moved = await store.load_conversation("562")
    assert (moved.flow, moved.state, moved.slots) == ("vincular", "pedir_rut", {"a": 1})

    # A number in a flow of its own keeps it; a number with none moves nothing.
    assert await store.move_conversation("562", "563") is False
    assert (await store.load_conversation("562")).flow == "vincular"
    assert await store.move_conversation("569", "570") is False


# Calls made with an Idempotency-Key


async def test_a_keyed_enqueue_keeps_its_answer_and_queues_once(store: Store) -> None:
    def answer(ids: list[int]) -> str:
        return f'{{"message_ids": {ids}}}'

    first = Keyed("trip-77-v1", "f" * 64, answer)
    ids = await store.enqueue([reply("561", "uno"), reply("561", "dos")], first)

    kept = await store.kept_answer("trip-77-v1")
    assert kept == KeptAnswer("f" * 64, answer(ids))
    assert await store.kept_answer("trip-78") is None

    # The same key again (a retry that crossed the first): refused whole.
    with pytest.raises(KeyInUse):
        await store.enqueue([reply("561", "tres")], first)
    assert texts(await store.outbox_items()) == ["uno", "dos"]
    assert await store.kept_answer("trip-77-v1") == kept


async def test_two_calls_with_one_key_at_once_queue_one_of_them(store: Store) -> None:
    def keyed(n: int) -> Keyed:
        return Keyed("alert-9", str(n), lambda ids: str(ids))

    outcomes = await asyncio.gather(
        *(store.enqueue([reply("561", f"aviso {n}")], keyed(n)) for n in range(4)),
        return_exceptions=True,
    )

    refused = [o for o in outcomes if isinstance(o, KeyInUse)]
    [queued] = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(refused) == 3
    assert [item.id for item in await store.outbox_items()] == queued
    assert (await store.kept_answer("alert-9")).response == str(queued)


# Statuses found by the send's callback data


async def test_a_status_adopts_an_item_whose_answer_was_lost(store: Store) -> None:
    [item_id] = await store.enqueue([reply("561", "uno")])
    [taken] = await store.due_outbox()
    # The send timed out: queued again for later, no wamid known.
    await store.mark_retry(taken.id, datetime.now(UTC), "timed out")

    assert await store.adopt_status(item_id, "wamid.A", "sent")
    [item] = await store.outbox_items()
    assert (item.wamid, item.status) == ("wamid.A", "sent")
    assert await store.due_outbox() == []
    # Meta's later statuses find it by its wamid now.
    assert await store.apply_status("wamid.A", "delivered")

    # A late outcome of the sender's own changes it no more.
    await store.mark_retry(item_id, datetime.now(UTC), "timed out again")
    await store.mark_failed(item_id, 131000, "late error")
    await store.mark_sent(item_id, "wamid.B", "accepted")
    [item] = await store.outbox_items()
    assert (item.wamid, item.status, item.error_code) == ("wamid.A", "delivered", None)

    # Only once, and only for an item of ours still to go.
    assert not await store.adopt_status(item_id, "wamid.C", "sent")
    assert not await store.adopt_status(item_id + 1000, "wamid.D", "sent")


# Pruning


async def test_prune_deletes_what_is_finished_and_old_and_nothing_else(
    store: Store,
) -> None:
    # No retention at all: every row since the first day stayed, and a full
    # disk was the operator's only notice.
    await store.add_events([event("done", "561"), event("pending", "562")])
    handled = await store.next_event("561")
    await store.commit_step(handled.id, None, [reply("561", "enviada")])
    [sent_id] = [item.id for item in await store.outbox_items("561")]
    [queued_id] = await store.enqueue([reply("563", "en cola")])
    await store.due_outbox()
    await store.mark_sent(sent_id, "wamid.prune.1", "accepted")
    await store.record_attempt(sent_id, 1, "accepted", 30)
    await store.mark_retry(queued_id, datetime.now(UTC), "later")
    await store.add_link_attempt("564", "12345678-5", "unknown")
    await store.enqueue(
        [reply("565", "con llave")], Keyed("k-prune", "f" * 64, lambda ids: "{}")
    )
    linked = datetime.now(UTC) - timedelta(days=1)
    await store.save_link(Link("566", "C1", "1-9", "Ana", "driver", "rut", linked))

    # Nothing is older than a time in the past.
    long_ago = datetime.now(UTC) - timedelta(days=30)
    assert set((await store.prune(long_ago)).values()) == {0}

    deleted = await store.prune(datetime.now(UTC) + timedelta(seconds=5))

    # The sent reply (and its attempt), the handled event, the linking
    # attempt and the kept answer went; the "con llave" message is queued.
    assert deleted == {"outbox": 1, "inbox": 1, "link_attempts": 1, "api_requests": 1}
    left = {item.id: item.status for item in await store.outbox_items()}
    assert sent_id not in left and left[queued_id] == "queued"
    assert await store.attempts_of(sent_id) == []
    assert await store.pending_count() == 1
    assert await store.kept_answer("k-prune") is None
    assert await store.failed_link_attempts("564", long_ago) == 0
    assert await store.get_link("566") is not None
