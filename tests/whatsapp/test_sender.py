"""The sender against the Graph API simulator, on a real SQLite file (and
PostgreSQL where a stop must interrupt a round trip to the store).

The simulator plays Meta: throughput bursts (429, 130429), the pair limit
(131056), the closed window (131047), a refused token (190), 500s and slow
answers. Whatever it answers, nothing is lost, nothing is sent twice, the
rate is never exceeded and each phone's messages arrive in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import Counter
from datetime import timedelta

import asyncpg
import pytest

from bot.config import SenderSettings
from bot.whatsapp.client import GraphClient
from bot.whatsapp.messages import template_body
from bot.whatsapp.sender import (
    MAX_PAUSE_SECONDS,
    TAKE_AHEAD_SECONDS,
    RateLimiter,
    Sender,
)
from bot.whatsapp.simulator import Simulator, make_app
from storage import create_store
from storage.base import Conversation, NewInboxEvent, NewOutbound, utcnow
from storage.sqlite import SqliteStore

TOKEN = "sender-test-token"
NUMBER = "200000000000002"
CAMILA = "56911120011"
BENJAMIN = "56911120016"


@pytest.fixture
def simulator() -> Simulator:
    return Simulator(token=TOKEN)


@pytest.fixture
async def store(tmp_path):
    async with SqliteStore(f"sqlite:///{tmp_path}/sender.db") as store:
        yield store


@pytest.fixture
async def client(simulator, aiohttp_server):
    server = await aiohttp_server(make_app(simulator))
    async with GraphClient(
        base_url=str(server.make_url("")).rstrip("/"),
        version="v23.0",
        token=TOKEN,
        timeout=2.0,
    ) as client:
        yield client


def make_sender(store, client, rate: float = 200.0, **options) -> Sender:
    settings = SenderSettings(
        rate_per_second=rate,
        max_attempts=options.pop("max_attempts", 8),
        backoff_seconds=0.02,
        backoff_max_seconds=0.1,
    )
    options.setdefault("poll_seconds", 0.02)
    options.setdefault("pair_pause_seconds", 0.3)
    # A send without an answer goes again at once unless a test says.
    options.setdefault("unanswered_wait_seconds", 0.0)
    return Sender(store, client, settings, **options)


def text(to: str, body: str, fallback: dict | None = None) -> NewOutbound:
    message = {"to": to, "type": "text", "text": {"preview_url": False, "body": body}}
    return NewOutbound(to, NUMBER, "message", message, fallback=fallback)


@contextlib.asynccontextmanager
async def running(sender: Sender):
    task = asyncio.create_task(sender.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def settled(store, seconds: float = 10.0) -> list:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        items = await store.outbox_items()
        if all(item.status not in ("queued", "sending") for item in items):
            return items
        await asyncio.sleep(0.02)
    raise TimeoutError("outbox not drained")


def accepted_texts(simulator: Simulator, to: str | None = None) -> list[str]:
    return [
        r["body"]["text"]["body"]
        for r in simulator.received
        if r["status"] == 200
        and r["body"].get("type") == "text"
        and (to is None or r["body"]["to"] == to)
    ]


async def first_accepted(simulator: Simulator, seconds: float = 5.0) -> None:
    # The simulator says when a send arrived; polling is how to know.
    ends = time.monotonic() + seconds
    while not accepted_texts(simulator):
        if time.monotonic() > ends:
            raise TimeoutError("no send accepted")
        await asyncio.sleep(0.02)


def phone(n: int) -> str:
    return f"5691112{n:04d}"


# Rate and bursts


async def test_rate_limit_of_the_number_is_never_exceeded(store, client, simulator):
    simulator.max_rate = 40
    await store.enqueue([text(phone(n), f"m{n}") for n in range(100)])
    sender = make_sender(store, client, rate=40)

    started = time.monotonic()
    async with running(sender):
        items = await settled(store)
    elapsed = time.monotonic() - started

    assert [r["code"] for r in simulator.received if r["status"] != 200] == []
    assert sorted(accepted_texts(simulator)) == sorted(f"m{n}" for n in range(100))
    assert {item.status for item in items} == {"accepted"}
    # 100 messages at 40 a second cannot take less than 60/40 s.
    assert elapsed >= 1.4


async def test_limiter_spaces_a_burst_within_one_second_windows():
    limiter = RateLimiter(50)
    stamps = []

    async def one() -> None:
        await limiter.wait(NUMBER)
        stamps.append(time.monotonic())

    await asyncio.gather(*(one() for _ in range(80)))

    stamps.sort()
    busiest = max(
        sum(1 for t in stamps if start <= t < start + 1.0) for start in stamps
    )
    assert busiest <= 50


async def test_throughput_bursts_are_retried_and_nothing_is_sent_twice(
    store, client, simulator
):
    simulator.fail(130429, times=6)
    simulator.fail(429, times=4)
    simulator.fail(4, times=2)
    await store.enqueue([text(phone(n), f"b{n}") for n in range(30)])
    sender = make_sender(store, client)

    async with running(sender):
        items = await settled(store)

    accepted = accepted_texts(simulator)
    assert sorted(accepted) == sorted(f"b{n}" for n in range(30))
    assert len(accepted) == len(set(accepted))
    assert {item.status for item in items} == {"accepted"}
    assert simulator.pending_failures == 0
    assert sender.metrics.errors.values["130429"] == 6


async def test_500s_and_slow_answers_lose_nothing(store, client, simulator):
    simulator.fail(500, times=3)
    simulator.fail(131000, times=2)
    simulator.delay = 0.2
    await store.enqueue([text(phone(n), f"s{n}") for n in range(20)])
    sender = make_sender(store, client)

    started = time.monotonic()
    async with running(sender):
        await settled(store)
    elapsed = time.monotonic() - started

    accepted = accepted_texts(simulator)
    assert sorted(accepted) == sorted(f"s{n}" for n in range(20))
    assert len(accepted) == len(set(accepted))
    # Slow answers overlap: twenty of them one after the other take 4 s.
    assert elapsed < 2.5


# Per-recipient order and the pair limit


async def test_pair_limit_waits_for_that_recipient_only_and_keeps_order(
    store, client, simulator
):
    simulator.fail_for(CAMILA, 131056, times=2)
    items = [text(CAMILA, f"c{n}") for n in range(4)]
    items += [text(BENJAMIN, f"b{n}") for n in range(4)]
    await store.enqueue(items)
    sender = make_sender(store, client)

    async with running(sender):
        await settled(store)

    assert accepted_texts(simulator, CAMILA) == ["c0", "c1", "c2", "c3"]
    assert accepted_texts(simulator, BENJAMIN) == ["b0", "b1", "b2", "b3"]
    order = [r["body"]["to"] for r in simulator.received if r["status"] == 200]
    # Benjamín did not wait behind Camila's pause.
    assert order.index(BENJAMIN) < order.index(CAMILA)


async def test_a_later_message_waits_for_an_earlier_one_in_retry(
    store, client, simulator
):
    simulator.fail_for(CAMILA, 131016, times=3)
    await store.enqueue([text(CAMILA, "first")])
    sender = make_sender(store, client)

    async with running(sender):
        await asyncio.sleep(0.05)
        await store.enqueue([text(CAMILA, "second")])
        sender.wake()
        await settled(store)

    assert accepted_texts(simulator, CAMILA) == ["first", "second"]


# Authentication, permanent errors, limits


async def test_refused_token_holds_the_queue_until_a_valid_one(
    store, client, simulator
):
    simulator.token = "rotated-token"
    await store.enqueue([text(phone(n), f"a{n}") for n in range(5)])
    sender = make_sender(store, client, auth_probe_seconds=0.3)

    async with running(sender):
        await asyncio.sleep(0.5)
        assert sender.held
        items = await store.outbox_items()
        assert {item.status for item in items} <= {"queued", "sending"}
        assert not accepted_texts(simulator)

        simulator.token = TOKEN  # the operator fixes the token
        items = await settled(store)

    assert not sender.held
    assert {item.status for item in items} == {"accepted"}
    assert sorted(accepted_texts(simulator)) == [f"a{n}" for n in range(5)]
    log = await store.attempts_of(items[0].id)
    assert log[0]["outcome"] == "auth" and log[0]["error_code"] == 190
    assert log[-1]["outcome"] == "accepted"


async def test_permanent_error_is_never_retried(store, client, simulator):
    simulator.fail_for(CAMILA, 131026)
    [item_id] = await store.enqueue([text(CAMILA, "hola")])
    sender = make_sender(store, client)

    async with running(sender):
        [item] = await settled(store)
        await asyncio.sleep(0.1)

    assert item.status == "failed" and item.error_code == 131026
    assert len(simulator.received) == 1
    log = await store.attempts_of(item_id)
    assert [entry["outcome"] for entry in log] == ["permanent"]


async def test_retryable_error_gives_up_after_max_attempts(store, client, simulator):
    simulator.fail_for(CAMILA, 133004, times=50)
    await store.enqueue([text(CAMILA, "hola")])
    sender = make_sender(store, client, max_attempts=3)

    async with running(sender):
        [item] = await settled(store)

    assert item.status == "failed" and item.error_code == 133004
    assert len(simulator.received) == 3


async def test_a_body_over_the_limits_never_leaves(store, client, simulator):
    buttons = [
        {"type": "reply", "reply": {"id": str(n), "title": f"Opción {n}"}}
        for n in range(4)
    ]
    body = {
        "to": CAMILA,
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "Elige"},
            "action": {"buttons": buttons},
        },
    }
    await store.enqueue([NewOutbound(CAMILA, NUMBER, "message", body)])
    sender = make_sender(store, client)

    async with running(sender):
        [item] = await settled(store)

    assert item.status == "failed"
    assert "4 buttons" in item.error_detail
    assert simulator.received == []


# The 24-hour window


def viaje(to: str) -> dict:
    return template_body(to, "viaje_actualizado", "es", ["AB-12-CD", "En Tránsito"])


async def test_closed_window_sends_the_template_instead(store, client, simulator):
    await store.enqueue([text(CAMILA, "Tu viaje va en tránsito", viaje(CAMILA))])
    sender = make_sender(store, client)

    async with running(sender):
        original, template = await settled(store)

    assert original.status == "replaced"
    assert template.fallback_of == original.id and template.status == "accepted"
    [request] = simulator.received
    assert request["body"]["type"] == "template"
    assert request["body"]["template"]["name"] == "viaje_actualizado"


async def test_open_window_sends_the_text(store, client, simulator):
    await _wrote(store, CAMILA, hours_ago=23)
    await store.enqueue([text(CAMILA, "Tu viaje va en tránsito", viaje(CAMILA))])
    sender = make_sender(store, client)

    async with running(sender):
        [item] = await settled(store)

    assert item.status == "accepted"
    assert accepted_texts(simulator) == ["Tu viaje va en tránsito"]


class CountedWindows(SqliteStore):
    """The real store, counting the sender's questions about windows."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.asked: list[list[str]] = []

    async def last_inbound(self, wa_ids):
        self.asked.append(list(wa_ids))
        return await super().last_inbound(wa_ids)


async def test_a_window_start_a_step_committed_is_not_asked_for_again(
    tmp_path, client, simulator
):
    # The dispatcher tells the sender when each phone last wrote; it asked
    # the store about every take's phones, 3 % of the processing thread.
    async with CountedWindows(f"sqlite:///{tmp_path}/w.db") as store:
        await _wrote(store, CAMILA, hours_ago=1)
        sender = make_sender(store, client)
        sender.starts.learn(CAMILA, utcnow() - timedelta(hours=1))
        await store.enqueue([text(CAMILA, "Tu viaje va en tránsito", viaje(CAMILA))])
        await store.enqueue([text(BENJAMIN, "Tu guía está lista", viaje(BENJAMIN))])

        async with running(sender):
            items = await settled(store)

    assert store.asked == [[BENJAMIN]]
    assert accepted_texts(simulator) == ["Tu viaje va en tránsito"]
    [template] = [i for i in items if i.fallback_of is not None]
    assert template.wa_id == BENJAMIN and template.status == "accepted"


async def test_a_known_start_that_ran_out_is_asked_for_again(store, client, simulator):
    # Camila wrote again since the start the sender knows (another process
    # handled it): the store's answer counts.
    await _wrote(store, CAMILA, hours_ago=2)
    sender = make_sender(store, client)
    sender.starts.learn(CAMILA, utcnow() - timedelta(hours=30))
    await store.enqueue([text(CAMILA, "Tu viaje va en tránsito", viaje(CAMILA))])

    async with running(sender):
        [item] = await settled(store)

    assert item.status == "accepted"
    assert accepted_texts(simulator) == ["Tu viaje va en tránsito"]


async def test_window_error_at_send_time_falls_back_once(store, client, simulator):
    # Our record says the window is open, Meta says it closed.
    await _wrote(store, CAMILA, hours_ago=1)
    simulator.fail_for(CAMILA, 131047, times=5)
    await store.enqueue(
        [text(CAMILA, "uno", viaje(CAMILA)), text(CAMILA, "dos", viaje(CAMILA))]
    )
    sender = make_sender(store, client)

    async with running(sender):
        items = await settled(store)

    kinds = Counter(r["body"]["type"] for r in simulator.received)
    assert kinds == {"text": 2, "template": 2}
    by_id = {item.id: item for item in items}
    templates = [item for item in items if item.fallback_of is not None]
    assert sorted(by_id[t.fallback_of].body["text"]["body"] for t in templates) == [
        "dos",
        "uno",
    ]
    # The template went out in the place of its text: order kept.
    order = [r["body"]["type"] for r in simulator.received]
    assert order == ["text", "template", "text", "template"]


async def _wrote(store, wa_id: str, hours_ago: float) -> None:
    event_ids = await _inbox_event(store, wa_id)
    when = utcnow() - timedelta(hours=hours_ago)
    await store.commit_step(
        event_ids, Conversation(wa_id=wa_id, last_inbound_at=when), []
    )


async def _inbox_event(store, wa_id: str) -> int:
    key = f"wamid.test-{wa_id}"
    await store.add_events([NewInboxEvent(key, "message", wa_id, NUMBER, {})])
    event = await store.next_event(wa_id)
    return event.id


async def test_no_more_than_max_in_flight_requests_wait_on_a_slow_graph_api(
    store, client, simulator
):
    simulator.delay = 0.1
    await store.enqueue([text(phone(n), f"lento {n}") for n in range(40)])
    sender = make_sender(store, client, max_in_flight=8)

    async with running(sender):
        items = await settled(store)

    assert [i.status for i in items] == ["accepted"] * 40
    assert sorted(accepted_texts(simulator)) == sorted(f"lento {n}" for n in range(40))
    # Slots are used (many phones at once) but never more than allowed.
    assert simulator.max_in_flight == 8


class SlowRecords(SqliteStore):
    """The real store, whose record of a send waits until `go` is set: a
    group commit stuck behind the loop's other work, as under load."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.go = asyncio.Event()

    async def record_sent(self, *args, **kwargs) -> None:
        await self.go.wait()
        await super().record_sent(*args, **kwargs)


async def test_a_slot_frees_when_the_graph_api_answers_not_when_recorded(
    tmp_path, client, simulator
):
    # Slots held until the record landed kept the sender at a third of what
    # the engine produced under load (bench/README.md, thirteenth pass).
    async with SlowRecords(f"sqlite:///{tmp_path}/slow.db") as store:
        await store.enqueue([text(phone(n), f"rápido {n}") for n in range(6)])
        sender = make_sender(store, client, max_in_flight=2)

        async with running(sender):
            with contextlib.suppress(TimeoutError):
                await simulator.wait_for(6)
            sent_before_any_record = len(accepted_texts(simulator))
            on_their_way = [i.status for i in await store.outbox_items()]
            store.go.set()
            items = await settled(store)

    # Every request left while no record had landed, two at a time at most.
    assert sent_before_any_record == 6
    assert on_their_way == ["sending"] * 6
    assert simulator.max_in_flight <= 2
    assert [i.status for i in items] == ["accepted"] * 6
    assert sorted(accepted_texts(simulator)) == sorted(f"rápido {n}" for n in range(6))


async def test_a_full_take_takes_again_as_slots_free_not_after_the_gather(
    store, client, simulator
):
    # Every slot filled means more may be due: a fixed wait after it left
    # the loop idle while replies waited. With a gather longer than the
    # test's patience, only taking again as slots free drains the queue.
    await store.enqueue([text(phone(n), f"turno {n}") for n in range(12)])
    sender = make_sender(store, client, max_in_flight=4)
    sender.settings = dataclasses.replace(sender.settings, gather_seconds=60.0)

    async with running(sender):
        items = await settled(store, seconds=10.0)

    assert [i.status for i in items] == ["accepted"] * 12
    assert simulator.max_in_flight <= 4


async def test_no_more_is_taken_than_leaves_well_inside_the_lease(
    store, client, simulator
):
    # A taken item is `sending`; at 1/s after a 130429 storm, 100 taken items
    # waited for their slots past the outbox's two-minute lease, were taken
    # again and sent twice (`python -m bench --faults`, error storms).
    await store.enqueue([text(phone(n), f"lento {n}") for n in range(60)])
    sender = make_sender(store, client, rate=2.0)

    async with running(sender):
        await asyncio.sleep(0.5)
        items = await store.outbox_items()

    on_their_way = [i for i in items if i.status == "sending"]
    assert 0 < len(on_their_way) <= 2.0 * TAKE_AHEAD_SECONDS


async def test_an_item_taken_again_after_its_lease_is_sent_once(
    store, client, simulator
):
    # Slowed after the take, an item can wait for its slot past the lease;
    # the queue then has it again. Here the lease "runs out" at once (the
    # item put back, as the store does to an expired one) and the sender
    # takes it again: the first take must then not send it.
    await store.enqueue([text(phone(n), f"m{n}") for n in range(6)])
    sender = make_sender(store, client, rate=4.0, renew_after_seconds=0.0)

    async with running(sender):
        last = None
        ends = time.monotonic() + 5
        while last is None and time.monotonic() < ends:
            taken = [i for i in await store.outbox_items() if i.status == "sending"]
            last = next((i for i in taken if i.body["text"]["body"] == "m5"), None)
            await asyncio.sleep(0.01)
        assert last is not None and last.attempts == 1
        await store.mark_retry(last.id, utcnow() - timedelta(seconds=1), "lease")
        await settled(store)
        # A second send would come in a later slot (4 a second): wait for it.
        await asyncio.sleep(1.0)
        items = await store.outbox_items()

    assert [i.status for i in items] == ["accepted"] * 6
    assert Counter(accepted_texts(simulator)) == {f"m{n}": 1 for n in range(6)}
    assert items[-1].attempts == 2


async def test_a_stop_before_the_request_leaves_spends_no_attempt(
    store, client, simulator
):
    # Each restart spent an attempt of every item waiting for its slot, so
    # a reply could be given up after fewer requests than max_attempts.
    await store.enqueue([text(phone(n), f"m{n}") for n in range(4)])
    sender = make_sender(store, client, rate=1.0)

    async with running(sender):
        await first_accepted(simulator)

    items = await store.outbox_items()
    assert accepted_texts(simulator) == ["m0"]
    assert [(i.status, i.attempts) for i in items] == [("accepted", 1)] + [
        ("queued", 0)
    ] * 3


async def test_a_stop_while_asking_for_the_lease_queues_the_item_again(
    postgres_db, client, simulator
):
    # On PostgreSQL the question is a real round trip a stop can interrupt;
    # a row lock held elsewhere keeps it waiting here. Left `sending`, the
    # item and its phone's later replies waited out the two-minute lease.
    async with create_store(postgres_db.dsn) as store:
        await store.enqueue([text(phone(n), f"m{n}") for n in range(2)])
        sender = make_sender(store, client, rate=1.0, renew_after_seconds=0.0)
        task = asyncio.create_task(sender.run())
        holder = await asyncpg.connect(postgres_db.dsn)
        try:
            await first_accepted(simulator)
            # The simulator sees m0 before the sender records its answer.
            ends = time.monotonic() + 5
            while "accepted" not in {i.status for i in await store.outbox_items()}:
                assert time.monotonic() < ends, "m0 never recorded"
                await asyncio.sleep(0.01)
            second = [i for i in await store.outbox_items() if i.status == "sending"]
            assert [i.body["text"]["body"] for i in second] == ["m1"]

            # m1's slot comes a second after m0's: it then waits on the lock.
            locked = holder.transaction()
            await locked.start()
            await holder.execute(
                "SELECT 1 FROM outbox WHERE id = $1 FOR UPDATE", second[0].id
            )
            await asyncio.sleep(1.5)
            task.cancel()
            await asyncio.sleep(0.2)
            await locked.rollback()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            await holder.close()

        items = await store.outbox_items()
    assert accepted_texts(simulator) == ["m0"]
    assert [i.status for i in items] == ["accepted", "queued"]


async def test_a_throughput_error_pauses_the_number_well_inside_the_lease(
    store, client, simulator
):
    # The pause was the failed item's own backoff (up to
    # sender.backoff_max_seconds, 300 s in config.yaml); the items taken
    # meanwhile waited it out `sending`, past their two-minute lease.
    simulator.fail(130429, times=1)
    await store.enqueue([text(CAMILA, "uno")])
    settings = SenderSettings(
        rate_per_second=80,
        max_attempts=8,
        backoff_seconds=200.0,
        backoff_max_seconds=300.0,
    )
    sender = Sender(store, client, settings, poll_seconds=0.02)

    async with running(sender):
        # The simulator says when its one failure is spent; polling is it.
        ends = time.monotonic() + 5
        while simulator.pending_failures and time.monotonic() < ends:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)

    [item] = await store.outbox_items()
    assert item.status == "queued"  # its own retry waits its backoff
    assert 0 < sender.limiter.paused_for(NUMBER) <= MAX_PAUSE_SECONDS


async def test_a_late_wake_up_never_bunches_requests_over_the_rate():
    # Slots are reserved up front; a loop busy when the first ones were due
    # wakes them late, and keeping to the later slots would put more than
    # `rate` requests in one window at Meta's end.
    limiter = RateLimiter(rate=5, window=1.0)
    departures: list[float] = []

    async def one() -> None:
        await limiter.wait(NUMBER)
        departures.append(time.monotonic())

    tasks = [asyncio.create_task(one()) for _ in range(10)]
    await asyncio.sleep(0)  # every slot reserved: 0.0, 0.2, 0.4, …
    time.sleep(0.5)  # noqa: ASYNC251 - a busy loop on purpose: three wake late
    await asyncio.gather(*tasks)

    departures.sort()
    for first, sixth in zip(departures, departures[5:], strict=False):
        assert sixth - first >= 1.0 - 0.001
