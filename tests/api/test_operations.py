"""What an operator relies on, over loopback HTTP against a running app
and its Graph API simulator: a refused reply still reaches the driver,
/readyz tells when Meta cannot be reached, and a wrong app secret shows."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiohttp import web

from bot.app import create_app
from bot.whatsapp.simulator import Simulator, make_app
from storage.base import NewOutbound
from tests import support
from tests.support import demo_settings, runtime_of, settle

CAMILA = "56911120011"


@pytest.fixture
def ops_log(caplog):
    # The tracbot loggers may not propagate (logs.setup): listen on them.
    logger = logging.getLogger("tracbot")
    caplog.set_level(logging.INFO, logger="tracbot")
    if logger.propagate:
        yield caplog
        return
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


async def driver_says(client, text: str, secret: str | None = None) -> int:
    return await support.driver_says(client, CAMILA, text, secret)


# A flow reply Meta refuses with 131047


async def test_a_refused_flow_reply_goes_as_the_text_template(tmp_path, aiohttp_client):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    simulator = runtime_of(client).simulator
    simulator.fail_for(CAMILA, 131047, times=1)

    assert await driver_says(client, "ayuda") == 200
    await settle(runtime_of(client))

    answered = [r for r in simulator.received if r["body"].get("to") == CAMILA]
    refused, template = answered[0], answered[-1]
    assert refused["code"] == 131047
    assert template["status"] == 200 and template["body"]["type"] == "template"
    assert template["body"]["template"]["name"] == "mensaje_tracmin"
    [value] = template["body"]["template"]["components"][0]["parameters"]
    # The driver reads the refused reply, on one line.
    said = refused["body"]["text"]["body"]
    assert value["text"] == " ".join(said.split())


# /readyz and an unreachable Graph API


async def test_readyz_warns_while_the_graph_api_is_unreachable(
    tmp_path, aiohttp_client, unused_tcp_port
):
    # A 503 here took every instance out of the load balancer (they all meet
    # the same Graph API), and Meta's webhooks with them, while each could
    # still store them: it is a warning, the replies wait in the outbox.
    settings = demo_settings(
        tmp_path,
        WHATSAPP_API_TOKEN="ops-token",
        WHATSAPP_PHONE_NUMBER_ID="200000000000002",
        WHATSAPP_API_BASE_URL=f"http://127.0.0.1:{unused_tcp_port}",
    )
    client = await aiohttp_client(create_app(settings))
    runtime = runtime_of(client)
    assert (await client.get("/readyz")).status == 200

    phones = [f"5691112{n:04d}" for n in range(3)]
    await runtime.store.enqueue(
        [
            NewOutbound(
                phone,
                "200000000000002",
                "message",
                {"to": phone, "type": "text", "text": {"body": "hola"}},
            )
            for phone in phones
        ]
    )
    runtime.sender.wake()
    body = await _readyz_until(client, lambda b: "warnings" in b)
    [warning] = body["warnings"]
    assert "Graph API" in warning and "connection refused" in warning
    assert body["status"] == "ready" and "problems" not in body
    assert await driver_says(client, "hola") == 200
    scrape = await (await client.get("/metrics")).text()
    assert "tracbot_graph_api_unreachable 1" in scrape.splitlines()
    assert "tracbot_ready 1" in scrape.splitlines()

    # Meta answers again: the next retry succeeds and the warning goes.
    simulator = Simulator(token="ops-token")
    runner = web.AppRunner(make_app(simulator))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        await _readyz_until(client, lambda b: "warnings" not in b)
    finally:
        await runner.cleanup()


async def _readyz_until(client, check, seconds: float = 10.0) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = await client.get("/readyz")
        body = await response.json()
        assert response.status == 200, body
        if check(body):
            return body
        await asyncio.sleep(0.05)
    raise TimeoutError("/readyz never said it")


# A wrong app secret


async def test_a_wrong_app_secret_is_told_apart_and_counted(
    tmp_path, aiohttp_client, ops_log
):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))

    missing = await client.post("/webhook", data=b"{}")
    statuses = [await driver_says(client, "hola", "not-the-secret") for _ in range(5)]

    assert missing.status == 401 and statuses == [401] * 5
    warnings = [r.getMessage() for r in ops_log.records if r.levelname == "WARNING"]
    # One line a minute at most, however many (anyone can post): the
    # metrics below count each.
    refused = [w for w in warnings if w.startswith("webhook refused")]
    assert refused == ["webhook refused: no X-Hub-Signature-256 header bytes=2"]
    # Said once at ERROR (at most once a minute), naming the variable.
    errors = [r.getMessage() for r in ops_log.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "WHATSAPP_APP_SECRET" in errors[0]

    scrape = await (await client.get("/metrics")).text()
    assert 'tracbot_webhook_signature_failures_total{reason="missing"} 1' in scrape
    assert 'tracbot_webhook_signature_failures_total{reason="mismatch"} 5' in scrape

    # /readyz said only "ready". It stays 200 (anyone can POST unsigned
    # bytes), with a warning until a signed POST is accepted.
    ready = await client.get("/readyz")
    body = await ready.json()
    assert ready.status == 200 and body["status"] == "ready"
    assert "6 POSTs were refused" in body["warnings"][0]
    assert "WHATSAPP_APP_SECRET" in body["warnings"][0]
    assert await driver_says(client, "hola") == 200
    assert "warnings" not in await (await client.get("/readyz")).json()


async def test_readyz_and_metrics_tell_when_every_message_fails(
    tmp_path, aiohttp_client
):
    # A business database overwritten with garbage: every driver got the
    # apology, and /readyz still said "ready" with nothing in /metrics.
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)
    assert await driver_says(client, "estado") == 200
    await settle(runtime)

    (tmp_path / "business.db").write_bytes(b"not a database at all " * 512)
    for text in ("estado", "guia", "estado"):
        assert await driver_says(client, text) == 200
        await settle(runtime)
    assert all("Lo siento" in t for t in support.sent_texts(runtime, CAMILA)[-3:])

    ready = await client.get("/readyz")
    assert ready.status == 200
    [warning] = (await ready.json())["warnings"]
    assert warning.startswith("engine: the last 3 messages failed")
    metrics = await (await client.get("/metrics")).text()
    assert "tracbot_engine_failures_total 3" in metrics
