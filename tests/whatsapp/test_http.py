"""The Graph client's HTTP pool against real servers on loopback.

Each server here is a few lines of asyncio streams that answer with exact
bytes, so framings aiohttp's server never writes (chunks, an answer that
ends at the close, an interim 100, garbage) can be posted to as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bot.whatsapp.http import (
    BadAnswer,
    ConnectError,
    HttpError,
    HttpPool,
    InvalidUrl,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Answering = Callable[
    ["Server", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]
]

OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b'Content-Length: 11\r\n\r\n{"ok":true}'
)


class Server:
    """A loopback server that counts its connections and keeps requests."""

    def __init__(self, answer: Handler) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.url = ""
        self.writers: list[asyncio.StreamWriter] = []
        # Connections whose handler has returned (the client closed them).
        self.ended = 0

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await self.answer(reader, writer)
        self.ended += 1
        writer.close()

    async def close(self) -> None:
        # Ends the connections the client keeps, and so the handlers.
        for writer in self.writers:
            writer.close()
        await asyncio.sleep(0.05)

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        self.requests.append((head, body))
        return body


@contextlib.asynccontextmanager
async def serving(
    answer: Callable[
        [Server, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]
    ],
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Server]:
    server = Server(lambda r, w: answer(server, r, w))
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/base"
    async with listener:
        try:
            yield server
        finally:
            await server.close()


async def keep_answering(server: Server, reader, writer, answer: bytes = OK) -> None:
    """Answer every request of the connection with `answer`."""
    while True:
        await server.read_request(reader)
        writer.write(answer)
        await writer.drain()


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answering(answer: bytes) -> Answering:
    """A server's way of answering every request with `answer`."""

    async def answer_each(server: Server, reader, writer) -> None:
        await keep_answering(server, reader, writer, answer)

    return answer_each


@pytest.fixture
async def pools():
    made: list[HttpPool] = []

    def make(url: str, **options) -> HttpPool:
        pool = HttpPool(url, {"Authorization": "Bearer t"}, timeout=2.0, **options)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.close()


async def test_requests_reuse_one_connection(pools):
    async with serving(keep_answering) as server:
        pool = pools(server.url)
        answers = [await pool.post("/v1/1/messages", b'{"n":%d}' % i) for i in range(5)]

    assert [(a.status, a.body) for a in answers] == [(200, b'{"ok":true}')] * 5
    assert server.connections == 1
    head, body = server.requests[-1]
    assert head.startswith(b"POST /base/v1/1/messages HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer t\r\n" in head
    assert b"\r\nHost: 127.0.0.1:" in head
    assert body == b'{"n":4}'


async def test_concurrent_requests_each_get_their_own_answer(pools):
    async def echo(server, reader, writer):
        while True:
            body = await server.read_request(reader)
            await asyncio.sleep(0.01)
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
            writer.write(head + body)

    async with serving(echo) as server:
        pool = pools(server.url, limit=4)
        answers = await asyncio.gather(*(pool.post("/x", b"%d" % i) for i in range(20)))

    assert [a.body for a in answers] == [b"%d" % i for i in range(20)]
    assert server.connections == 4


async def test_a_chunked_answer_is_read_whole(pools):
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"ok"\r\n6\r\n:true}\r\n0\r\n\r\n'
    )

    async with serving(answering(chunked)) as server:
        pool = pools(server.url)
        first = await pool.post("/x", b"{}")
        second = await pool.post("/x", b"{}")

    assert first.body == second.body == b'{"ok":true}'
    assert server.connections == 1


async def test_an_answer_that_ends_at_the_close_is_read_whole(pools):
    async def answer(server, reader, writer):
        await server.read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"ok":')
        await writer.drain()
        writer.write(b"true}")

    async with serving(answer) as server:
        pool = pools(server.url)
        first = await pool.post("/x", b"{}")
        second = await pool.post("/x", b"{}")

    assert first.body == second.body == b'{"ok":true}'
    # The connection ended with the answer: the second needed a new one.
    assert server.connections == 2


async def test_connection_close_is_not_reused(pools):
    closing = OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)

    async def answer(server, reader, writer):
        await server.read_request(reader)
        writer.write(closing)
        # The server keeps the socket open a little: only the header says
        # it will not take another request.
        await asyncio.sleep(0.2)

    async with serving(answer) as server:
        pool = pools(server.url)
        for _ in range(3):
            assert (await pool.post("/x", b"{}")).status == 200

    assert server.connections == 3


async def test_an_idle_connection_the_server_dropped_is_not_reused(pools):
    async def answer(server, reader, writer):
        await server.read_request(reader)
        writer.write(OK)
        await writer.drain()
        # Dropped after one answer, without saying so.

    async with serving(answer) as server:
        pool = pools(server.url)
        await pool.post("/x", b"{}")
        await asyncio.sleep(0.1)
        second = await pool.post("/x", b"{}")

    assert second.status == 200
    assert server.connections == 2


async def test_a_connection_idle_too_long_is_closed_not_reused(pools):
    async with serving(keep_answering) as server:
        pool = pools(server.url, idle_seconds=0.05)
        await pool.post("/x", b"{}")
        await asyncio.sleep(0.1)
        await pool.post("/x", b"{}")

    assert server.connections == 2


async def test_an_interim_100_is_skipped(pools):
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"

    async with serving(answering(interim + OK)) as server:
        pool = pools(server.url)
        answer_ = await pool.post("/x", b"{}")

    assert (answer_.status, answer_.body) == (200, b'{"ok":true}')


async def test_error_statuses_are_answers(pools):
    error = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\n{}"

    async with serving(answering(error)) as server:
        pool = pools(server.url)
        answer_ = await pool.post("/x", b"{}")

    assert (answer_.status, answer_.body) == (429, b"{}")


async def test_a_close_in_the_middle_of_an_answer_is_bad_answer(pools):
    async def answer(server, reader, writer):
        await server.read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"ok"')

    async with serving(answer) as server:
        pool = pools(server.url)
        with pytest.raises(BadAnswer, match="closed the connection"):
            await pool.post("/x", b"{}")


async def test_bytes_that_are_not_http_are_bad_answer(pools):
    async def answer(server, reader, writer):
        await server.read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await asyncio.sleep(0.5)

    async with serving(answer) as server:
        pool = pools(server.url)
        with pytest.raises(BadAnswer, match="not an HTTP answer"):
            await pool.post("/x", b"{}")


async def test_an_answer_over_the_cap_is_bad_answer(pools):
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000

    async with serving(answering(big)) as server:
        pool = pools(server.url, max_body=1000)
        with pytest.raises(BadAnswer, match="larger than 1000 bytes"):
            await pool.post("/x", b"{}")


async def test_a_late_answer_never_becomes_the_next_requests(pools):
    async def answer(server, reader, writer):
        while True:
            body = await server.read_request(reader)
            if body == b"slow":
                await asyncio.sleep(0.3)
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
            writer.write(head + body)

    async with serving(answer) as server:
        pool = HttpPool(server.url, {}, timeout=0.1)
        try:
            with pytest.raises(TimeoutError):
                await pool.post("/x", b"slow")
            await asyncio.sleep(0.3)
            # Closed by the pool, not left open for a late answer.
            ended_after_timeout = server.ended
            pool.timeout = 2.0
            fast = await pool.post("/x", b"fast")
        finally:
            await pool.close()

    assert fast.body == b"fast"
    assert server.connections == 2
    assert ended_after_timeout == 1


async def test_a_refused_connection_is_connect_error(pools):
    port = closed_port()
    pool = pools(f"http://127.0.0.1:{port}")

    with pytest.raises(ConnectError) as caught:
        await pool.post("/x", b"{}")

    assert isinstance(caught.value.os_error, ConnectionRefusedError)
    assert (
        str(caught.value)
        == f"connection to 127.0.0.1:{port} failed: connection refused"
    )


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("not-a-url", "not an http:// or https:// URL"),
        ("ftp://graph.example", "not an http:// or https:// URL"),
        ("http://", "names no host"),
        ("http://127.0.0.1:1/v?x=1", "has a query"),
    ],
)
async def test_a_url_that_cannot_work_fails_each_request(pools, url, why):
    pool = pools(url)

    with pytest.raises(InvalidUrl, match=why):
        await pool.post("/x", b"{}")


def test_a_header_with_a_line_break_is_refused():
    with pytest.raises(ValueError, match="Authorization header holds a control"):
        HttpPool("http://127.0.0.1:1", {"Authorization": "Bearer t\r\nX: y"}, timeout=1)


# TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, made with openssl."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def server_tls(certificate) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


async def test_https_with_a_trusted_certificate(pools, certificate):
    trusting = ssl.create_default_context(cafile=certificate[0])

    async with serving(keep_answering, tls=server_tls(certificate)) as server:
        pool = pools(server.url, ssl_context=trusting)
        first = await pool.post("/x", b"{}")
        second = await pool.post("/x", b"{}")

    assert first.body == second.body == b'{"ok":true}'
    assert server.connections == 1


async def test_https_refuses_a_certificate_the_system_does_not_trust(
    pools, certificate
):
    async with serving(keep_answering, tls=server_tls(certificate)) as server:
        pool = pools(server.url)
        with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await pool.post("/x", b"{}")

    assert server.requests == []


# What a broken or hostile server sends (found by a tester)


async def test_bytes_sent_while_no_request_waits_close_the_connection(pools):
    async def answer(server, reader, writer):
        body = await server.read_request(reader)
        writer.write(OK)
        await asyncio.sleep(0.05)
        # The head of an answer nobody asked for, while the connection idles.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n")
        await keep_answering(server, reader, writer, b"STRAY_BODY!!" + body)

    async with serving(answer) as server:
        pool = pools(server.url)
        await pool.post("/x", b"{}")
        await asyncio.sleep(0.1)
        second = await pool.post("/x", b"{}")

    assert second.body == b'{"ok":true}'
    assert server.connections == 2


async def test_a_second_answer_to_one_request_is_never_the_next_ones(pools):
    other = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nother"

    async with serving(answering(OK + other)) as server:
        pool = pools(server.url)
        answers = [await pool.post("/x", b"{}") for _ in range(3)]

    assert [a.body for a in answers] == [b'{"ok":true}'] * 3
    assert server.connections == 3


async def test_a_path_that_could_end_the_request_line_is_refused(pools):
    async with serving(keep_answering) as server:
        pool = pools(server.url)
        for path in ("/v1/1\r\nX: y/messages", "/v1/1 2/messages", "v1"):
            with pytest.raises(InvalidUrl, match="not a path of printable ASCII"):
                await pool.post(path, b"{}")

    assert server.requests == []


async def test_an_endless_header_is_cut_off(pools):
    async def answer(server, reader, writer):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: ")
        while True:
            writer.write(b"a" * 8192)
            await writer.drain()

    async with serving(answer) as server:
        pool = pools(server.url)
        with pytest.raises(BadAnswer, match="headers longer than 65536 bytes"):
            await pool.post("/x", b"{}")


async def test_close_fails_requests_in_flight_and_later_ones(pools):
    async def answer(server, reader, writer):
        await server.read_request(reader)
        await asyncio.sleep(0.3)
        writer.write(OK)

    async with serving(answer) as server:
        pool = pools(server.url)
        request = asyncio.create_task(pool.post("/x", b"{}"))
        await asyncio.sleep(0.1)
        await pool.close()

        with pytest.raises(BadAnswer, match="pool was closed"):
            await request
        with pytest.raises(HttpError, match="pool is closed"):
            await pool.post("/x", b"{}")

    assert server.connections == 1


async def test_a_reset_in_an_answer_that_ends_at_the_close_is_bad_answer(pools):
    async def answer(server, reader, writer):
        await server.read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\n\r\n{"messages":[{"id":"wamid.')
        await writer.drain()
        await asyncio.sleep(0.05)
        # SO_LINGER 0: the close sends a reset, not an orderly end.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async with serving(answer) as server:
        pool = pools(server.url)
        with pytest.raises(BadAnswer, match="closed the connection"):
            await pool.post("/x", b"{}")


async def test_a_protocol_upgrade_is_bad_answer(pools, caplog):
    upgrade = (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
        b"Upgrade: h2c\r\n\r\nxyz"
    )

    async def answer(server, reader, writer):
        await server.read_request(reader)
        writer.write(upgrade)
        await asyncio.sleep(0.3)

    async with serving(answer) as server:
        pool = pools(server.url)
        with pytest.raises(BadAnswer, match="not an HTTP answer"):
            await pool.post("/x", b"{}")

    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


async def test_https_to_a_plain_http_server_says_so(pools):
    async def plain(server, reader, writer):
        # A plain HTTP server's answer to the bytes of a TLS greeting.
        await reader.read(1)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async with serving(plain) as server:
        pool = pools(server.url.replace("http://", "https://"))
        with pytest.raises(ConnectError, match="server that speaks plain http"):
            await pool.post("/x", b"{}")
