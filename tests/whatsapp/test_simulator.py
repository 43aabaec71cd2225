"""The Graph API simulator: answers, limits, status webhooks and controls.

Everything runs over real HTTP on 127.0.0.1; the simulator is driven either
directly or through its `/_sim/` control endpoints.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import socket
import time

import aiohttp
import pytest
from aiohttp import web

from bot.whatsapp.client import GraphClient
from bot.whatsapp.graph_errors import GraphError
from bot.whatsapp.simulator import Simulator, make_app, run_simulator, serve
from tests.support import WEBHOOKS

TOKEN = "test-token-0123456789"
APP_SECRET = "test-app-secret"
VERSION = "v23.0"
PHONE_NUMBER_ID = "200000000000002"
CAMILA = "56911120011"
BENJAMIN = "56911120016"
MESSAGES = f"/{VERSION}/{PHONE_NUMBER_ID}/messages"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

CORPUS = WEBHOOKS


def corpus(name: str) -> dict:
    return json.loads((CORPUS / name).read_bytes())


def text(to: str, body: str) -> dict:
    return {
        "messaging_product": "whatsapp",
        "to": to,
        "type": "text",
        "text": {"body": body},
    }


def buttons(*titles: str) -> dict:
    replies = [
        {"type": "reply", "reply": {"id": f"b{i}", "title": title}}
        for i, title in enumerate(titles)
    ]
    interactive = {
        "type": "button",
        "body": {"text": "¿Llegaste?"},
        "action": {"buttons": replies},
    }
    return {"to": CAMILA, "type": "interactive", "interactive": interactive}


def list_menu(rows: int, title: str = "Mi última guía") -> dict:
    section = {
        "title": "Menú",
        "rows": [{"id": f"r{i}", "title": title} for i in range(rows)],
    }
    interactive = {
        "type": "list",
        "body": {"text": "Elige"},
        "action": {"button": "Ver opciones", "sections": [section]},
    }
    return {"to": CAMILA, "type": "interactive", "interactive": interactive}


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def structure(value):
    """Keys of nested objects, to compare shapes and not invented values."""
    if isinstance(value, dict):
        return {key: structure(item) for key, item in value.items()}
    if isinstance(value, list):
        return [structure(item) for item in value]
    return type(value).__name__


@pytest.fixture
def simulator() -> Simulator:
    return Simulator(token=TOKEN)


@pytest.fixture
async def http(simulator, aiohttp_client):
    return await aiohttp_client(make_app(simulator))


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def graph():
    """Makes Graph API clients; closes their connections after the test."""
    clients: list[GraphClient] = []

    def make(base_url: str, token: str = TOKEN) -> GraphClient:
        client = GraphClient(base_url=base_url, version=VERSION, token=token)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def webhook_inbox(aiohttp_server):
    """A webhook receiver keeping raw bodies and signatures, and its URL."""
    inbox: list[tuple[bytes, str | None]] = []

    async def receive(request: web.Request) -> web.Response:
        inbox.append((await request.read(), request.headers.get("X-Hub-Signature-256")))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/webhook", receive)
    server = await aiohttp_server(app)
    return inbox, str(server.make_url("/webhook"))


# Answers


async def test_success_has_the_shape_of_the_corpus(http):
    response = await http.post(MESSAGES, json=text("+" + CAMILA, "Hola"), headers=AUTH)
    body = await response.json()

    assert response.status == 200
    assert structure(body) == structure(corpus("graph_send_success.json"))
    assert body["contacts"] == [{"input": "+" + CAMILA, "wa_id": CAMILA}]


async def test_template_success_has_message_status_accepted(http):
    template = {"name": "viaje_actualizado", "language": {"code": "es"}}
    send = {"to": BENJAMIN, "type": "template", "template": template}

    response = await http.post(MESSAGES, json=send, headers=AUTH)
    body = await response.json()

    assert structure(body) == structure(corpus("graph_send_template_accepted.json"))
    assert body["messages"][0]["message_status"] == "accepted"


async def test_wamids_are_unique_and_base64(http):
    wamids = set()
    for _ in range(20):
        response = await http.post(MESSAGES, json=text(CAMILA, "Hola"), headers=AUTH)
        wamids.add((await response.json())["messages"][0]["id"])

    assert len(wamids) == 20
    for wamid in wamids:
        assert wamid.startswith("wamid.")
        assert CAMILA.encode() in base64.b64decode(wamid.removeprefix("wamid."))


async def test_mark_read_answers_success(http, simulator):
    read = {"messaging_product": "whatsapp", "status": "read", "message_id": "w.1"}
    simulator.fail(130429)

    response = await http.post(MESSAGES, json=read, headers=AUTH)

    # Scripted failures are for sends; a mark-read must not consume one.
    assert (response.status, await response.json()) == (200, {"success": True})
    assert simulator.pending_failures == 1


async def test_wrong_token_answers_the_190_shape(http, simulator):
    headers = {"Authorization": "Bearer expired"}

    response = await http.post(MESSAGES, json=text(CAMILA, "Hola"), headers=headers)
    body = await response.json()

    assert response.status == 401
    assert structure(body) == structure(corpus("graph_error_190_expired_token.json"))
    assert (body["error"]["code"], body["error"]["error_subcode"]) == (190, 463)
    assert simulator.received[0]["status"] == 401


async def test_scripted_error_has_the_shape_of_the_corpus(http, simulator):
    simulator.fail(130429, times=2)

    answers = [
        await http.post(MESSAGES, json=text(CAMILA, "Hola"), headers=AUTH)
        for _ in range(3)
    ]

    expected = corpus("graph_error_130429.json")
    first = await answers[0].json()
    assert [answer.status for answer in answers] == [400, 400, 200]
    assert structure(first) == structure(expected)
    assert first["error"]["message"] == expected["error"]["message"]
    assert first["error"]["error_data"] == expected["error"]["error_data"]
    assert [request["code"] for request in simulator.received] == [130429, 130429, None]


async def test_plain_500_answers_html(http, simulator):
    simulator.fail(500)

    response = await http.post(MESSAGES, json=text(CAMILA, "Hola"), headers=AUTH)

    assert response.status == 500
    assert response.content_type == "text/html"
    assert "<html>" in await response.text()


async def test_fail_for_hits_only_that_recipient(graph, simulator, aiohttp_server):
    server = await aiohttp_server(make_app(simulator))
    url = str(server.make_url("")).rstrip("/")
    client = graph(url)
    simulator.fail_for("+" + CAMILA, 131056, times=2)

    await client.send_text(PHONE_NUMBER_ID, BENJAMIN, "Hola")
    codes = []
    for _ in range(3):
        try:
            await client.send_text(PHONE_NUMBER_ID, CAMILA, "Hola")
            codes.append(None)
        except GraphError as error:
            codes.append(error.code)

    assert codes == [131056, 131056, None]


# Limits


@pytest.mark.parametrize(
    ("body", "code", "details"),
    [
        (text(CAMILA, "a" * 4097), 100, "at most 4096 characters"),
        (text(CAMILA, ""), 100, "at least 1 character"),
        ({"type": "text", "text": {"body": "sin destinatario"}}, 100, "to"),
        (buttons("Uno", "Dos", "Tres", "Cuatro"), 131009, "Buttons count invalid"),
        (
            buttons("Sí", "x" * 21),
            131009,
            "Button title length invalid. Min length: 1, Max length: 20",
        ),
        (buttons("Sí", "Sí"), 131009, "unique"),
        (list_menu(11), 131009, "Total row count exceed max allowed count: 10"),
        (list_menu(3, title="x" * 25), 131009, "Row title length invalid"),
    ],
)
async def test_limits_are_rejected_like_meta(http, body, code, details):
    response = await http.post(MESSAGES, json=body, headers=AUTH)
    error = (await response.json())["error"]

    assert response.status == 400
    assert error["code"] == code
    assert details in error["error_data"]["details"]


@pytest.mark.parametrize(
    "body",
    [
        text(CAMILA, "a" * 4096),
        buttons("Uno", "Dos", "x" * 20),
        list_menu(10, title="x" * 24),
    ],
)
async def test_bodies_at_the_limit_are_accepted(http, body):
    response = await http.post(MESSAGES, json=body, headers=AUTH)

    assert response.status == 200, await response.text()


async def test_max_rate_answers_130429_above_the_rate(http, simulator):
    simulator.max_rate = 5

    burst = await asyncio.gather(
        *(
            http.post(MESSAGES, json=text(CAMILA, "Hola"), headers=AUTH)
            for _ in range(8)
        )
    )
    other_number = await http.post(
        f"/{VERSION}/200000000000004/messages", json=text(CAMILA, "Hola"), headers=AUTH
    )
    await asyncio.sleep(1.05)
    later = await http.post(MESSAGES, json=text(CAMILA, "Hola"), headers=AUTH)

    statuses = sorted(response.status for response in burst)
    assert statuses == [200] * 5 + [400] * 3
    assert [r["code"] for r in simulator.received[:8]].count(130429) == 3
    assert other_number.status == 200
    assert later.status == 200


# Waiting


async def test_wait_for_returns_the_received_requests(http, simulator):
    sends = [
        asyncio.create_task(
            http.post(MESSAGES, json=text(CAMILA, f"m{i}"), headers=AUTH)
        )
        for i in range(3)
    ]

    received = await simulator.wait_for(3, timeout=2.0)
    await asyncio.gather(*sends)

    assert sorted(r["body"]["text"]["body"] for r in received) == ["m0", "m1", "m2"]


async def test_wait_for_times_out_with_the_count(simulator):
    with pytest.raises(TimeoutError, match="Received 0 of 1"):
        await simulator.wait_for(1, timeout=0.05)


# Status webhooks


async def test_status_webhooks_are_posted_signed(http, simulator, webhook_inbox):
    inbox, url = webhook_inbox
    simulator.webhook_url, simulator.app_secret = url, APP_SECRET
    send = {**text(CAMILA, "Ruta: A/B"), "biz_opaque_callback_data": "outbox/7"}

    response = await http.post(MESSAGES, json=send, headers=AUTH)
    wamid = (await response.json())["messages"][0]["id"]
    await simulator.webhooks.wait(timeout=5.0)

    assert len(inbox) == 2
    statuses = []
    for raw, signature in inbox:
        digest = hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(signature, "sha256=" + digest)
        body = json.loads(raw)
        assert body["object"] == "whatsapp_business_account"
        [change] = body["entry"][0]["changes"]
        assert change["field"] == "messages"
        assert change["value"]["metadata"]["phone_number_id"] == PHONE_NUMBER_ID
        [status] = change["value"]["statuses"]
        assert status["id"] == wamid
        assert status["recipient_id"] == CAMILA
        assert status["biz_opaque_callback_data"] == "outbox/7"
        assert b'"outbox\\/7"' in raw  # Meta's wire style escapes `/`
        assert isinstance(status["timestamp"], str) and status["timestamp"].isdigit()
        statuses.append(status["status"])
    assert statuses == ["sent", "delivered"]


async def test_status_webhooks_match_the_corpus_shape(http, simulator, webhook_inbox):
    inbox, url = webhook_inbox
    simulator.webhook_url, simulator.app_secret = url, APP_SECRET

    await http.post(MESSAGES, json=text(CAMILA, "Hola"), headers=AUTH)
    await simulator.webhooks.wait(timeout=5.0)

    sent, delivered = (json.loads(raw) for raw, _ in inbox)
    expected_delivered = corpus("status_delivered.json")
    for status in expected_delivered["entry"][0]["changes"][0]["value"]["statuses"]:
        status.pop("recipient_user_id")
    for contact in expected_delivered["entry"][0]["changes"][0]["value"]["contacts"]:
        contact.pop("user_id")
    assert structure(sent) == structure(corpus("status_sent_pmp.json"))
    assert structure(delivered) == structure(expected_delivered)


async def test_no_webhooks_for_failed_sends(http, simulator, webhook_inbox):
    inbox, url = webhook_inbox
    simulator.webhook_url, simulator.app_secret = url, APP_SECRET
    simulator.fail(131047)

    await http.post(MESSAGES, json=text(CAMILA, "Hola"), headers=AUTH)
    await simulator.webhooks.wait(timeout=5.0)

    assert inbox == []


async def test_unreachable_webhook_is_logged_not_raised(http, simulator):
    simulator.webhook_url = f"http://127.0.0.1:{closed_port()}/webhook"
    simulator.app_secret = APP_SECRET
    # A handler on the logger itself: `tracbot` may not propagate to root.
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("tracbot.simulator").addHandler(handler)

    first = await http.post(MESSAGES, json=text(CAMILA, "Hola"), headers=AUTH)
    await simulator.webhooks.wait(timeout=5.0)
    second = await http.post(MESSAGES, json=text(CAMILA, "Hola"), headers=AUTH)
    await simulator.webhooks.wait(timeout=5.0)
    logging.getLogger("tracbot.simulator").removeHandler(handler)

    assert (first.status, second.status) == (200, 200)
    assert simulator.webhooks.pending == 0
    # One warning per message: after a failed `sent`, `delivered` is not tried.
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert warnings == ["status webhook post failed error=ClientConnectorError"] * 2


async def test_shutdown_cancels_stuck_webhook_posts(graph, aiohttp_server):
    release = asyncio.Event()

    async def stuck(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    receiver = web.Application()
    receiver.router.add_post("/webhook", stuck)
    hook = await aiohttp_server(receiver)
    simulator = Simulator(webhook_url=str(hook.make_url("/webhook")), app_secret="s")

    started = time.monotonic()
    async with serve(simulator) as url:
        assert url.startswith("http://127.0.0.1:")
        client = graph(url, token="any")
        await client.send_text(PHONE_NUMBER_ID, CAMILA, "Hola")
        assert simulator.webhooks.pending == 1
    release.set()

    assert simulator.webhooks.pending == 0
    assert time.monotonic() - started < 10


async def test_run_simulator_serves_until_cancelled(session, graph):
    port = closed_port()
    task = asyncio.create_task(run_simulator("127.0.0.1", port, token=TOKEN))
    url = f"http://127.0.0.1:{port}"

    for _ in range(100):
        try:
            async with session.get(url + "/_sim/messages") as response:
                listed = await response.json()
            break
        except aiohttp.ClientConnectorError:
            await asyncio.sleep(0.02)
    else:
        pytest.fail("the simulator did not start")
    client = graph(url)
    result = await client.send_text(PHONE_NUMBER_ID, CAMILA, "Hola")
    task.cancel()

    assert listed == []
    assert result.wa_id == CAMILA
    with pytest.raises(asyncio.CancelledError):
        await task


# Control endpoints


async def test_control_endpoints_drive_the_simulator(http, simulator):
    queued = await http.post("/_sim/fail", json={"code": 131047, "times": 2})
    delayed = await http.post("/_sim/delay", json={"seconds": 0.05})
    answer = await http.post(MESSAGES, json=text(CAMILA, "Hola"), headers=AUTH)
    listed = await http.get("/_sim/messages")

    assert (await queued.json()) == {"pending": 2}
    assert (await delayed.json()) == {"delay": 0.05}
    assert simulator.delay == 0.05
    assert (await answer.json())["error"]["code"] == 131047
    [request] = await listed.json()
    assert request["body"] == text(CAMILA, "Hola")
    assert (request["status"], request["code"]) == (400, 131047)
    assert request["phone_number_id"] == PHONE_NUMBER_ID

    reset = await http.post("/_sim/reset")

    assert reset.status == 200
    assert simulator.received == []
    assert simulator.pending_failures == 0
    assert simulator.delay == 0.0


async def test_control_fail_for_one_recipient(http):
    await http.post("/_sim/fail", json={"code": 500, "to": CAMILA, "http_status": 502})

    camila = await http.post(MESSAGES, json=text(CAMILA, "Hola"), headers=AUTH)
    benjamin = await http.post(MESSAGES, json=text(BENJAMIN, "Hola"), headers=AUTH)

    assert (camila.status, camila.content_type) == (502, "text/html")
    assert benjamin.status == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/_sim/fail", {"times": 1}),
        ("/_sim/fail", {"code": "130429"}),
        ("/_sim/fail", {"code": 130429, "to": 569}),
        ("/_sim/delay", {"seconds": -1}),
        ("/_sim/delay", {"seconds": "1"}),
    ],
)
async def test_control_rejects_bad_input(http, simulator, path, body):
    response = await http.post(path, json=body)

    assert response.status == 400
    assert simulator.pending_failures == 0
    assert simulator.delay == 0.0


async def test_a_status_webhook_the_bot_refused_is_posted_again(http, aiohttp_server):
    # Meta posts a status again until it is taken; the simulator gave up at
    # once, so a bot that was restarting never learnt what Meta had.
    taken: list[bytes] = []
    refusals = 2

    async def receive(request: web.Request) -> web.Response:
        nonlocal refusals
        if refusals:
            refusals -= 1
            return web.Response(status=503, text="restarting")
        taken.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/webhook", receive)
    server = await aiohttp_server(app)
    simulator = Simulator(
        token="any",
        webhook_url=str(server.make_url("/webhook")),
        app_secret=APP_SECRET,
        webhook_retry_seconds=10.0,
    )
    async with serve(simulator) as url, aiohttp.ClientSession() as session:
        sent = await session.post(
            f"{url}/v23.0/{PHONE_NUMBER_ID}/messages",
            json=text(CAMILA, "Hola"),
            headers={"Authorization": "Bearer any"},
        )
        assert sent.status == 200
        await simulator.webhooks.wait(timeout=10.0)

    statuses = [json.loads(raw)["entry"][0]["changes"][0]["value"] for raw in taken]
    assert [value["statuses"][0]["status"] for value in statuses] == [
        "sent",
        "delivered",
    ]
