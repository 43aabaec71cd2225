"""The storage contract of the hot-path calls (issue 7): `next_turn` and
`record_sent`, each one round trip where a backend can.

Each test runs on the three backends of conftest.py.
"""

from __future__ import annotations

import asyncio

from storage import Conversation, NewInboxEvent, NewOutbound, Store
from storage.base import utcnow

PHONE_NUMBER_ID = "106540352242922"


def event(key: str, wa_id: str | None) -> NewInboxEvent:
    return NewInboxEvent(key, "message", wa_id, PHONE_NUMBER_ID, {"id": key})


def reply(wa_id: str, text: str) -> NewOutbound:
    body = {"type": "text", "text": {"body": text}}
    return NewOutbound(wa_id, PHONE_NUMBER_ID, "message", body)


async def test_next_turn_gives_the_oldest_event_and_the_conversation(
    store: Store,
) -> None:
    await store.add_events([event("a1", "561"), event("a2", "561")])
    first, fresh = await store.next_turn("561")
    assert first is not None and first.key == "a1"
    # No conversation stored yet: a new, empty one for that phone.
    assert fresh == Conversation(wa_id="561")

    saved = Conversation("561", flow="guia", state="pide_numero", slots={"n": 1})
    saved.last_inbound_at = utcnow()
    await store.commit_step(first.id, saved, [])

    second, loaded = await store.next_turn("561")
    assert second is not None and second.key == "a2"
    assert loaded == await store.load_conversation("561")
    assert (loaded.flow, loaded.state, loaded.slots) == (
        "guia",
        "pide_numero",
        {"n": 1},
    )

    await store.commit_step(second.id, None, [])
    assert await store.next_turn("561") == (None, None)


async def test_next_turn_of_events_without_a_phone(store: Store) -> None:
    await store.add_events([event("n1", None), event("p1", "562")])
    notice, conversation = await store.next_turn("")
    assert notice is not None and notice.key == "n1"
    assert conversation is None
    other, _ = await store.next_turn("562")
    assert other is not None and other.key == "p1"


async def test_record_sent_marks_the_item_and_logs_the_attempt(store: Store) -> None:
    [item_id] = await store.enqueue([reply("563", "hola")])
    [taken] = await store.due_outbox()

    await store.record_sent(item_id, "wamid.HBg1", "accepted", taken.attempts, 42)

    [item] = await store.outbox_items("563")
    assert (item.status, item.wamid) == ("accepted", "wamid.HBg1")
    [attempt] = await store.attempts_of(item_id)
    assert attempt["attempt"] == taken.attempts == 1
    assert (attempt["outcome"], attempt["ms"]) == ("accepted", 42)
    assert attempt["detail"] == "wamid.HBg1"
    assert await store.due_outbox() == []


async def test_concurrent_calls_each_get_their_own_answer(store: Store) -> None:
    # Many webhooks at once, some repeating a key: whatever a backend does
    # to write them together, each caller learns how many of its own were
    # new, and a repeated key counts once.
    batches = [[event(f"c{i}", f"57{i % 5}")] for i in range(40)]
    batches += [[event("c3", "573"), event("c41", "571")]]
    counts = await asyncio.gather(*(store.add_events(b) for b in batches))
    assert counts[:3] + counts[4:40] == [1] * 39
    # c3 is new in whichever of its two batches commits first (on a pool of
    # connections either may); it counts once between them, c41 once.
    assert (counts[3], counts[40]) in ((1, 1), (0, 2))
    assert await store.pending_count() == 41


async def test_next_turns_gives_events_in_order_and_says_when_drained(
    store: Store,
) -> None:
    # The interface's default reads one event a trip; SQLite and PostgreSQL
    # read up to `limit`.
    batched = type(store).next_turns is not Store.next_turns
    await store.add_events([event(f"t{i}", "563") for i in range(3)])
    await store.add_events([event("other", "564")])

    turns = await store.next_turns("563", 2)
    assert [e.key for e in turns.events] == (["t0", "t1"] if batched else ["t0"])
    assert turns.conversation == Conversation(wa_id="563")
    assert not turns.drained  # t2 is still pending either way

    for done in turns.events:
        await store.commit_step(done.id, None, [])
    rest = await store.next_turns("563", 5)
    assert [e.key for e in rest.events] == (["t2"] if batched else ["t1"])
    # Fewer than asked for: drained, when the backend can tell.
    assert rest.drained is batched

    while rest.events:
        for done in rest.events:
            await store.commit_step(done.id, None, [])
        rest = await store.next_turns("563", 5)
    assert (rest.events, rest.conversation, rest.drained) == ([], None, True)
    assert [e.key for e in (await store.next_turns("564", 5)).events] == ["other"]
