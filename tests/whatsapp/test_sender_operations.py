"""The sender as operators meet it, against the Graph API simulator on
loopback: read marks that are best effort, a closed window with and without
a template, failures whose log line says why, and a clean stop that leaves
nothing half-sent."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from datetime import timedelta

import aiohttp
import pytest

from bot.whatsapp.client import GraphClient
from bot.whatsapp.messages import template_body
from bot.whatsapp.simulator import Simulator, make_app
from storage import sqlite as sqlite_store
from storage.base import NewOutbound
from storage.sqlite import SqliteStore
from tests.whatsapp.test_sender import (
    CAMILA,
    NUMBER,
    TOKEN,
    _wrote,
    accepted_texts,
    make_sender,
    running,
    settled,
    text,
)


@pytest.fixture
def simulator() -> Simulator:
    return Simulator(token=TOKEN)


@pytest.fixture
async def store(tmp_path):
    async with SqliteStore(f"sqlite:///{tmp_path}/sender.db") as store:
        yield store


@pytest.fixture
async def base_url(simulator, aiohttp_server) -> str:
    server = await aiohttp_server(make_app(simulator))
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def graph():
    """Makes Graph API clients; closes their connections after the test."""
    clients: list[GraphClient] = []

    def make(base_url: str, timeout: float = 2.0) -> GraphClient:
        client = GraphClient(
            base_url=base_url, version="v23.0", token=TOKEN, timeout=timeout
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def read_mark(to: str) -> NewOutbound:
    return NewOutbound(to, NUMBER, "read", {"message_id": "wamid.in", "typing": True})


def reads(simulator: Simulator) -> int:
    return sum(1 for r in simulator.received if r["body"].get("status") == "read")


@pytest.fixture
def sender_log(caplog):
    # The tracbot loggers may not propagate (logs.setup): listen on them.
    logger = logging.getLogger("tracbot")
    caplog.set_level(logging.INFO, logger="tracbot")
    if logger.propagate:
        yield caplog
        return
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


# Read marks


async def test_a_failed_read_mark_is_tried_once_and_never_again(
    store, simulator, graph, base_url
):
    # Every answer is late: the read mark and the reply both time out.
    simulator.delay = 1.0
    [mark, _] = await store.enqueue([read_mark(CAMILA), text(CAMILA, "uno")])
    sender = make_sender(store, graph(base_url, timeout=0.3))

    async with running(sender):
        await simulator.wait_for(2)
        simulator.delay = 0.0
        items = await settled(store)
        await asyncio.sleep(0.3)  # time enough for any retry to show

    by_id = {item.id: item for item in items}
    assert by_id[mark].status == "failed"
    assert reads(simulator) == 1
    # The reply was retried and went out.
    assert [i.status for i in items if i.kind == "message"] == ["accepted"]


async def test_a_slow_read_mark_does_not_hold_the_reply_back(
    store, simulator, graph, base_url
):
    simulator.delay = 1.5
    await store.enqueue([read_mark(CAMILA)])
    sender = make_sender(store, graph(base_url))

    async with running(sender):
        await simulator.wait_for(1)
        simulator.delay = 0.0
        started = time.monotonic()
        await store.enqueue([text(CAMILA, "uno")])
        sender.wake()
        await simulator.wait_for(2)
        waited = time.monotonic() - started
        await settled(store)

    # The reply left while the read mark was still waiting for its answer.
    assert waited < 1.0
    assert reads(simulator) == 1


# The closed window


async def test_131047_without_a_fallback_says_so_at_error(
    store, simulator, graph, base_url, sender_log
):
    simulator.fail_for(CAMILA, 131047, times=1)
    await store.enqueue([text(CAMILA, "uno")])
    sender = make_sender(store, graph(base_url))

    async with running(sender):
        [item] = await settled(store)

    assert item.status == "failed" and item.error_code == 131047
    errors = [r.getMessage() for r in sender_log.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert errors[0].startswith(f"no template fallback configured for id={item.id}")
    assert "template instead" not in sender_log.text


# Failures that say why


async def test_a_refused_connection_is_named_in_the_log(store, graph, sender_log):
    with_nothing = aiohttp.web.Application()
    runner = aiohttp.web.AppRunner(with_nothing)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    await runner.cleanup()  # the port is now closed

    await store.enqueue([text(CAMILA, "uno")])
    sender = make_sender(store, graph(f"http://127.0.0.1:{port}"))
    await sender.send_due()

    [line] = [r.getMessage() for r in sender_log.records if "send failed" in r.msg]
    assert f"127.0.0.1:{port}" in line
    assert "connection refused" in line
    assert "action=retry" in line


async def test_an_outage_longer_than_the_attempts_fails_no_reply(
    store, simulator, graph
):
    # Eight attempts with backoff used to last about two minutes: a Graph
    # API down longer than that failed every queued reply for good, though
    # none had left the host.
    with_nothing = aiohttp.web.Application()
    runner = aiohttp.web.AppRunner(with_nothing)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    await runner.cleanup()  # the port is now closed
    phones = ["56911120011", "56911120012", "56911120013"]
    await store.enqueue([text(phone, f"hola {phone}") for phone in phones])
    sender = make_sender(store, graph(f"http://127.0.0.1:{port}"), max_attempts=2)

    async with running(sender):
        # Failed requests are logged; the store is how to know they happened.
        ends = time.monotonic() + 10
        while len(await store.attempts_of(1)) < 4:
            assert time.monotonic() < ends, "no four attempts in 10 s"
            await asyncio.sleep(0.02)
        during = await store.outbox_items()
        assert sender.unreachable

        # The Graph API comes back on the same address.
        back = aiohttp.web.AppRunner(make_app(simulator))
        await back.setup()
        await aiohttp.web.TCPSite(back, "127.0.0.1", port).start()
        try:
            items = await settled(store)
        finally:
            await back.cleanup()

    assert {item.status for item in during} <= {"queued", "sending"}
    assert [item.status for item in items] == ["accepted"] * 3
    assert sorted(r["body"]["to"] for r in simulator.received) == phones
    assert not sender.unreachable


async def test_a_base_url_with_a_wrong_path_keeps_the_replies_and_says_so(
    store, graph, base_url
):
    # Meta's URL copied with its version (`…/v23.0`): the simulator, like any
    # web server, answers 404 without a Graph error body. Every reply was
    # failed as permanent after one try, and /readyz still said ready.
    # It costs no attempt either: with one attempt allowed, every reply was
    # given up at its first 404.
    phones = ["56911120011", "56911120012", "56911120013"]
    await store.enqueue([text(phone, "hola") for phone in phones])
    sender = make_sender(store, graph(f"{base_url}/v23.0"), max_attempts=1)

    async with running(sender):
        ends = time.monotonic() + 10
        while not sender.unreachable:
            assert time.monotonic() < ends, "not unreachable in 10 s"
            await asyncio.sleep(0.02)
        items = await store.outbox_items()

    assert "failed" not in {item.status for item in items}
    assert {item.attempts for item in items} == {0}
    assert "HTTP 404 without a Graph error body" in sender.network_reason
    assert "WHATSAPP_API_BASE_URL" in sender.network_reason


async def test_a_proxy_refusing_one_message_holds_neither_its_phone_nor_the_rest(
    store, simulator, graph, base_url
):
    # A firewall's 403 (HTML, no Graph error) for one body cost no attempt:
    # retried forever, it held every later message of its phone, and /readyz
    # said the Graph API was unreachable.
    await store.enqueue([text(CAMILA, "uno"), text(CAMILA, "dos")])
    simulator.fail_for(CAMILA, 403, times=2)
    sender = make_sender(store, graph(base_url), max_attempts=2)
    async with running(sender):
        items = await settled(store)

    assert [item.status for item in items] == ["failed", "accepted"]
    assert [item.attempts for item in items] == [2, 1]
    assert not sender.unreachable and sender.network_failures == 0


async def test_a_failure_line_says_once_what_happens_next(
    store, simulator, graph, base_url, sender_log
):
    # A read mark's line said "action=dropped …: … (action=retry)", and the
    # last attempt's "action=retry" came right before "giving up".
    simulator.fail_for(CAMILA, 133004, times=50)
    await store.enqueue([text(CAMILA, "hola")])
    sender = make_sender(store, graph(base_url), max_attempts=2)
    async with running(sender):
        await settled(store)
    simulator.reset()  # no more scripted failures; the read mark times out
    simulator.delay = 1.0
    await store.enqueue([read_mark(CAMILA)])
    await make_sender(store, graph(base_url, timeout=0.2)).send_due()

    lines = [r.getMessage() for r in sender_log.records if "send failed" in r.msg]
    assert [line.count("action=") for line in lines] == [1, 1, 1]
    assert "action=retry attempt=1" in lines[0]
    assert "action=give_up attempt=2" in lines[1]
    assert "kind=read" in lines[2] and "action=dropped" in lines[2]
    # The attempts log and /metrics say it too: a last retry was `retry`,
    # and no count of replies given up could raise an alert.
    [reply] = [item for item in await store.outbox_items() if item.kind == "message"]
    attempts = await store.attempts_of(reply.id)
    assert [a["outcome"] for a in attempts] == ["retry", "give_up"]
    # The stored error says what went wrong; what came of it is the outcome
    # (the history of a reply given up read "action=retry").
    assert not [a for a in attempts if "action=" in (a["detail"] or "")]
    assert "action=" not in (reply.error_detail or "")


async def test_failures_are_forgotten_once_no_reply_waits(
    store, simulator, graph, base_url
):
    # Every answer too late: the reply is given up after its attempts, and
    # /readyz said "unreachable" until some new reply happened to be sent.
    simulator.delay = 0.5
    await store.enqueue([text(CAMILA, "uno")])
    sender = make_sender(store, graph(base_url, timeout=0.1), max_attempts=3)

    async with running(sender):
        [item] = await settled(store)
        failures = sender.network_failures
        ends = time.monotonic() + 10
        while sender.unreachable:
            assert time.monotonic() < ends, "still unreachable after 10 s"
            await asyncio.sleep(0.02)

    assert item.status == "failed" and failures == 3


async def test_an_invalid_url_is_named_in_the_log(store, graph, sender_log):
    await store.enqueue([text(CAMILA, "uno")])
    sender = make_sender(store, graph("not-a-url"))
    await sender.send_due()

    [line] = [r.getMessage() for r in sender_log.records if "send failed" in r.msg]
    assert "URL is invalid" in line and "not-a-url" in line


async def test_a_timeout_says_after_how_long(
    store, simulator, graph, base_url, sender_log
):
    simulator.delay = 0.5
    await store.enqueue([text(CAMILA, "uno")])
    sender = make_sender(store, graph(base_url, timeout=0.2))
    await sender.send_due()

    [line] = [r.getMessage() for r in sender_log.records if "send failed" in r.msg]
    assert "timed out after 0.2 s" in line


# A clean stop


async def test_a_stop_mid_request_lets_it_finish_and_records_it(
    tmp_path, simulator, graph, base_url, sender_log
):
    # The request is on the wire: Meta may accept it. Re-queueing it blind
    # would send the reply again after the restart, so the stop waits for
    # the answer (bounded by the client timeout) and records it.
    url = f"sqlite:///{tmp_path}/stop.db"
    simulator.delay = 1.0
    async with SqliteStore(url) as store:
        [item_id] = await store.enqueue([text(CAMILA, "uno")])
        sender = make_sender(store, graph(base_url, timeout=5.0))
        async with running(sender):
            await simulator.wait_for(1)
        [item] = await store.outbox_items()
    assert item.id == item_id and item.status == "accepted"
    assert item.wamid == simulator.received[0]["wamid"]

    # The next start finds nothing left `sending`, and sends nothing again.
    async with SqliteStore(url) as store:
        assert await store.due_outbox() == []
    assert "unclean stop" not in sender_log.text
    assert len(simulator.received) == 1


async def test_the_outbox_never_looks_drained_before_its_fallback_is_queued(
    store, simulator, graph, base_url
):
    # A test (or an operator) that waits for a drained outbox must not see
    # one between the 131047 and the template queued in its place.
    await _wrote(store, CAMILA, hours_ago=1)
    fallback = {"to": CAMILA, "type": "template", "template": {"name": "t"}}
    fallback["template"]["language"] = {"code": "es"}
    sender = make_sender(store, graph(base_url))
    drained: list[int] = []

    async def watch() -> None:
        while True:
            items = await store.outbox_items()
            if all(i.status not in ("queued", "sending") for i in items):
                drained.append(len(items))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    async with running(sender):
        for n in range(15):
            simulator.fail_for(CAMILA, 131047, times=1)
            await store.enqueue([text(CAMILA, f"m{n}", fallback)])
            sender.wake()
            await simulator.wait_for(2 * (n + 1))
            await settled(store)
    watcher.cancel()

    # Each text and its template: a drained outbox always holds pairs.
    assert drained and all(count % 2 == 0 for count in drained)


async def test_a_send_recorded_after_an_outage_past_the_lease_leaves_once(
    tmp_path, graph, base_url, simulator, monkeypatch
):
    # The record of a send Meta accepted was retried for a minute, then
    # given up; the lease (two minutes) then handed the item out again and
    # every reply in flight reached its driver twice. A lease of half a
    # second and an outage of three stand for them here.
    monkeypatch.setattr(sqlite_store, "SENDING_LEASE", timedelta(seconds=0.5))
    simulator.delay = 0.5
    path = tmp_path / "outage.db"
    async with SqliteStore(f"sqlite:///{path}") as store:
        await store.enqueue([text(CAMILA, "una vez")])
        sender = make_sender(store, graph(base_url))
        async with running(sender):
            ends = time.monotonic() + 5
            while [i.status for i in await store.outbox_items()] != ["sending"]:
                assert time.monotonic() < ends, "never taken"
                await asyncio.sleep(0.01)

            # Another process holds the file while the answer comes back.
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            await asyncio.sleep(3.0)
            holder.execute("ROLLBACK")
            holder.close()

            [item] = await settled(store)
            await asyncio.sleep(1.0)  # a second take would have gone by now

    assert accepted_texts(simulator) == ["una vez"]
    assert (item.status, item.wamid) == ("accepted", simulator.received[0]["wamid"])


async def test_a_template_meta_holds_back_says_so_in_the_log_and_the_outbox(
    store, simulator, graph, base_url, sender_log
):
    # Every send was "accepted", also a template Meta answered with
    # message_status held_for_quality_assessment or paused.
    simulator.template_status = "paused"
    body = template_body(CAMILA, "viaje_actualizado", "es", ["🚛", "AB-12-CD"])
    await store.enqueue([NewOutbound(CAMILA, NUMBER, "message", body)])
    sender = make_sender(store, graph(base_url))
    await sender.send_due()

    [item] = await store.outbox_items()
    assert item.status == "paused" and item.wamid is not None
    [line] = [r.getMessage() for r in sender_log.records if "held by Meta" in r.msg]
    assert "message_status=paused" in line and "…0011" in line

    # A later status still moves it on.
    assert await store.apply_status(item.wamid, "delivered")
    [item] = await store.outbox_items()
    assert item.status == "delivered"
