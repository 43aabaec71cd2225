"""GraphClient against the Graph API simulator over loopback HTTP.

Also the classification of Graph errors, including the exact bytes of the
error bodies of the payload corpus.
"""

from __future__ import annotations

import logging
import socket

import pytest
from aiohttp import web

from bot.whatsapp.client import GraphClient, SendResult
from bot.whatsapp.graph_errors import GraphError, classify, parse_graph_error
from bot.whatsapp.simulator import Simulator, make_app
from tests.support import WEBHOOKS

TOKEN = "test-token-0123456789"
VERSION = "v23.0"
PHONE_NUMBER_ID = "200000000000002"
CAMILA = "56911120011"
BENJAMIN = "56911120016"

CORPUS = WEBHOOKS


@pytest.fixture
def simulator() -> Simulator:
    return Simulator(token=TOKEN)


@pytest.fixture
async def graph_url(simulator, aiohttp_server) -> str:
    server = await aiohttp_server(make_app(simulator))
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def graph():
    """Makes Graph API clients; closes their connections after the test."""
    clients: list[GraphClient] = []

    def make(base_url: str, token: str = TOKEN, timeout: float = 2.0) -> GraphClient:
        client = GraphClient(
            base_url=base_url, version=VERSION, token=token, timeout=timeout
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
def client(graph, graph_url) -> GraphClient:
    return graph(graph_url)


class Records(logging.Handler):
    """Keeps the records of one logger, whatever its propagation."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def graph_logs():
    logger = logging.getLogger("tracbot.graph")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Sending


async def test_send_text_returns_wamid_and_wa_id(client, simulator):
    result = await client.send_text(PHONE_NUMBER_ID, "+" + CAMILA, "Hola")

    assert isinstance(result, SendResult)
    assert result.wamid.startswith("wamid.")
    assert result.wa_id == CAMILA
    assert result.input == "+" + CAMILA
    assert result.message_status is None
    assert simulator.received[0]["wamid"] == result.wamid


async def test_send_posts_exactly_the_body_given(client, simulator):
    body = {
        "to": CAMILA,
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "¿Llegaste? 🚛"},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "yes", "title": "Sí, llegué"}},
                    {"type": "reply", "reply": {"id": "no", "title": "Todavía no"}},
                ]
            },
        },
    }

    await client.send(PHONE_NUMBER_ID, body)

    [request] = simulator.received
    assert request["phone_number_id"] == PHONE_NUMBER_ID
    assert request["version"] == VERSION
    assert request["body"] == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        **body,
    }


async def test_send_text_quotes_reply_to_and_asks_preview(client, simulator):
    text = "Mira https://x.test"
    await client.send_text(
        PHONE_NUMBER_ID, CAMILA, text, preview_url=True, reply_to="wamid.QUOTED"
    )

    assert simulator.received[0]["body"] == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": CAMILA,
        "type": "text",
        "text": {"preview_url": True, "body": "Mira https://x.test"},
        "context": {"message_id": "wamid.QUOTED"},
    }


async def test_template_send_reports_message_status_accepted(client):
    template = {"name": "viaje_actualizado", "language": {"code": "es"}}
    body = {"to": BENJAMIN, "type": "template", "template": template}

    result = await client.send(PHONE_NUMBER_ID, body)

    assert result.message_status == "accepted"
    assert result.wa_id == BENJAMIN


async def test_mark_read_sends_typing_indicator(client, simulator):
    assert await client.mark_read(PHONE_NUMBER_ID, "wamid.IN1", typing=True) is None
    await client.mark_read(PHONE_NUMBER_ID, "wamid.IN2")

    assert [request["body"] for request in simulator.received] == [
        {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": "wamid.IN1",
            "typing_indicator": {"type": "text"},
        },
        {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN2"},
    ]


# Error classification through real HTTP answers


@pytest.mark.parametrize(
    ("code", "action", "http_status"),
    [
        (130429, "retry", 400),
        (131000, "retry", 500),
        (133004, "retry", 503),
        (131047, "template", 400),
        (131026, "permanent", 400),
        (132001, "permanent", 404),
        (368, "auth", 403),
        (131031, "auth", 403),
    ],
)
async def test_graph_error_codes_map_to_actions(
    client, simulator, code, action, http_status
):
    simulator.fail(code)

    with pytest.raises(GraphError) as caught:
        await client.send_text(PHONE_NUMBER_ID, CAMILA, "Hola")

    error = caught.value
    assert (error.code, error.action, error.http_status) == (code, action, http_status)
    assert error.message.startswith(f"(#{code})")
    assert error.fbtrace_id


async def test_pair_rate_limit_is_retry_for_that_recipient(client, simulator):
    simulator.fail_for(CAMILA, 131056)

    other = await client.send_text(PHONE_NUMBER_ID, BENJAMIN, "Hola")
    with pytest.raises(GraphError) as caught:
        await client.send_text(PHONE_NUMBER_ID, CAMILA, "Hola")

    assert other.wa_id == BENJAMIN
    assert caught.value.code == 131056
    assert caught.value.action == "retry_recipient"
    assert caught.value.retryable
    assert "too many messages" in caught.value.details


async def test_wrong_token_is_auth_error_190(graph, graph_url):
    client = graph(graph_url, token="stale")

    with pytest.raises(GraphError) as caught:
        await client.send_text(PHONE_NUMBER_ID, CAMILA, "Hola")

    error = caught.value
    assert (error.code, error.subcode, error.http_status) == (190, 463, 401)
    assert error.action == "auth"
    assert error.details is None
    assert not error.retryable


async def test_html_500_from_a_proxy_is_retry(client, simulator):
    simulator.fail(500)

    with pytest.raises(GraphError) as caught:
        await client.send_text(PHONE_NUMBER_ID, CAMILA, "Hola")

    assert caught.value.code is None
    assert caught.value.http_status == 500
    assert caught.value.action == "retry"


async def test_timeout_is_retry(graph, graph_url, simulator):
    simulator.delay = 0.5
    client = graph(graph_url, timeout=0.1)

    with pytest.raises(GraphError) as caught:
        await client.send_text(PHONE_NUMBER_ID, CAMILA, "Hola")

    assert caught.value.action == "retry"
    assert caught.value.http_status is None
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_connection_refused_is_retry(graph):
    url = f"http://127.0.0.1:{closed_port()}"
    client = graph(url)

    with pytest.raises(GraphError) as caught:
        await client.send_text(PHONE_NUMBER_ID, CAMILA, "Hola")

    assert caught.value.action == "retry"
    assert isinstance(caught.value.__cause__.os_error, ConnectionRefusedError)


async def test_2xx_without_json_is_retry(graph, aiohttp_server):
    async def portal(request: web.Request) -> web.Response:
        return web.Response(text="<html>Welcome</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/{tail:.*}", portal)
    server = await aiohttp_server(app)
    url = str(server.make_url("")).rstrip("/")
    client = graph(url)

    with pytest.raises(GraphError) as caught:
        await client.send_text(PHONE_NUMBER_ID, CAMILA, "Hola")

    assert caught.value.action == "retry"
    assert caught.value.http_status == 200


# Logging


async def test_token_never_logged_and_text_only_at_debug(client, simulator, graph_logs):
    await client.send_text(PHONE_NUMBER_ID, CAMILA, "Texto privado del chofer")
    simulator.fail(131026)
    with pytest.raises(GraphError):
        await client.send_text(PHONE_NUMBER_ID, CAMILA, "Texto privado del chofer")

    lines = [record.getMessage() for record in graph_logs]
    with_text = [r for r in graph_logs if "Texto privado" in r.getMessage()]
    assert with_text, "the body text is expected at DEBUG"
    assert all(record.levelno == logging.DEBUG for record in graph_logs)
    assert not any(TOKEN in line or CAMILA in line for line in lines)
    assert TOKEN not in repr(client)


# parse_graph_error on raw bodies


def test_corpus_130429_bytes_parse_as_retry():
    raw = (CORPUS / "graph_error_130429.json").read_bytes()

    error = parse_graph_error(400, raw)

    assert error.code == 130429
    assert error.action == "retry"
    assert error.details == "Cloud API message throughput has been reached."
    assert error.fbtrace_id == "Aq5AtzHmBUnmGl8SAqBwoBY"


def test_corpus_190_bytes_parse_as_auth_without_error_data():
    raw = (CORPUS / "graph_error_190_expired_token.json").read_bytes()

    error = parse_graph_error(401, raw)

    assert (error.code, error.subcode, error.action) == (190, 463, "auth")
    assert error.details is None
    assert error.message.startswith("Error validating access token")


def test_code_as_string_is_read_as_int():
    body = {"error": {"message": "(#131047) Re-engagement message", "code": "131047"}}

    error = parse_graph_error(400, body)

    assert error.code == 131047
    assert error.action == "template"


@pytest.mark.parametrize(
    ("http_status", "body", "action"),
    [
        (502, b"<html><body>Bad Gateway</body></html>", "retry"),
        (503, b"", "retry"),
        (400, b"<html>Bad Request</html>", "retry"),
        (404, b"not found", "retry"),
        (401, b"<html>Unauthorized</html>", "auth"),
        (429, b"Too Many Requests", "retry"),
        (400, b"\xff\xfe\x00junk", "retry"),
        (500, b"[1, 2, 3]", "retry"),
        (400, b'{"error": "string instead of object"}', "retry"),
        (400, b"[" * 100_000, "retry"),
        (400, None, "retry"),
    ],
)
def test_junk_bodies_never_raise_and_are_retried(http_status, body, action):
    # Only the Graph API's own error object can say a send is hopeless:
    # anything else is a proxy or a wrong base URL, retried (and counted as
    # no answer from the Graph API by the sender).
    error = parse_graph_error(http_status, body)

    assert error.code is None
    assert error.http_status == http_status
    assert error.action == action


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (4, "retry"),
        (80007, "retry"),
        (1, "retry"),
        (2, "retry"),
        (131016, "retry"),
        (131057, "retry"),
        (0, "auth"),
        (100, "permanent"),
        (131008, "permanent"),
        (131009, "permanent"),
        (131051, "permanent"),
        (132000, "permanent"),
        (131030, "permanent"),
    ],
)
def test_codes_decide_over_http_status(code, action):
    # A 500 status must not turn a configuration error into a retry.
    assert classify(code, 500) == action
    assert classify(code, 400) == action


def test_unknown_code_falls_back_on_http_status():
    assert classify(999999, 503) == "retry"
    assert classify(999999, 400) == "permanent"
    assert classify(999999, 401) == "auth"
    assert classify(None, None) == "retry"
