"""Keep-alive HTTP/1.1 POSTs to one origin: how the Graph client talks.

The sender posts small JSON bodies to one host, over and over. aiohttp's
client spent 76-89 µs of CPU on each such request on loopback, a sixth of
all the work of a message (request and response objects, header
multidicts, cookies, tracing, timers); the Graph client on this pool spends
34-36 µs on the same exchange (bench/README.md, seventh pass).

It does only what the Graph API needs: POST with a Content-Length body,
over plain TCP or TLS (certificates checked against the system's store),
answers framed by Content-Length, chunks or the end of the connection,
parsed by httptools (llhttp, the parser of Node.js and uvicorn). No
proxies, redirects, cookies or compression: the Graph API uses none.

Connections are kept for reuse while the server keeps them alive and for at
most `idle_seconds` unused, since a server that dropped an idle one
meanwhile fails the next request on it. A request that fails or times out
closes its connection: its answer may still be on the way.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote, urlsplit

import httptools

# How long a connection may sit unused before it is closed rather than
# reused; servers commonly drop idle ones after 30-120 s.
IDLE_SECONDS = 15.0

# The largest answer read; a Graph API answer is a few hundred bytes.
MAX_BODY_BYTES = 1 << 20
# The longest status line and headers read.
MAX_HEAD_BYTES = 64 << 10


# What a request's path may hold: printable ASCII without spaces (the
# caller escapes the rest), so nothing can end the request line early.
_PATH = re.compile(r"/[!-~]*")


class HttpError(Exception):
    """A request that got no complete answer."""


class InvalidUrl(HttpError, ValueError):
    """The base URL cannot be posted to."""


class ConnectError(HttpError):
    """No connection to the server (refused, unresolvable, TLS refused)."""

    def __init__(self, host: str, port: int, os_error: OSError) -> None:
        reason = os_error.strerror or str(os_error) or type(os_error).__name__
        if isinstance(os_error, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(os_error, ssl.SSLError) and "WRONG_VERSION" in reason:
            reason += " (an https:// URL for a server that speaks plain http?)"
        super().__init__(f"connection to {host}:{port} failed: {reason}")
        self.host = host
        self.port = port
        self.os_error = os_error


class BadAnswer(HttpError):
    """The connection broke or carried something that is not an answer."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete HTTP answer."""

    status: int
    body: bytes


class _Connection(asyncio.Protocol):
    """One connection and the answer it waits for; httptools calls back.

    Bytes that come while no request waits (a second answer to one request,
    an answer nobody asked for) close the connection: kept, they would be
    read as the next request's answer.
    """

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        # Bytes read before the end of the answer's headers.
        self._head_size = 0
        self._headers_done = False
        # Whether the answer says where it ends (else it ends at the close).
        self._framed = False
        self._keep_alive = False

    # asyncio calls these.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._headers_done:
            # The parser builds a long header by appending, at a cost that
            # grows with its square: an endless one is cut off here.
            self._head_size += len(data)
            if self._head_size > MAX_HEAD_BYTES:
                self._fail(BadAnswer(f"headers longer than {MAX_HEAD_BYTES} bytes"))
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadAnswer("not an HTTP answer: a protocol upgrade"))
        except httptools.HttpParserError as exc:
            # A callback's own error comes wrapped by the parser.
            cause = exc.__context__ or exc.__cause__
            if isinstance(cause, BadAnswer):
                self._fail(cause)
            else:
                self._fail(BadAnswer(f"not an HTTP answer: {exc}"))

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._waiting:
            return
        if exc is None and self._headers_done and not self._framed:
            self._answer()
            return
        why = f": {exc}" if exc else ""
        self._fail(BadAnswer(f"server closed the connection{why}"))

    # httptools calls these.

    def on_message_begin(self) -> None:
        if not self._waiting:
            raise BadAnswer("the server sent an answer no request asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        chunked = name == b"transfer-encoding" and b"chunked" in value.lower()
        if name == b"content-length" or chunked:
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.max_body:
            raise BadAnswer(f"answer larger than {self.max_body} bytes")
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:
            # An interim answer (100 Continue): the real one follows.
            self._reset()
            return
        self._keep_alive = self._parser.should_keep_alive()
        self._answer()

    # The pool calls these.

    async def exchange(self, request: bytes) -> Answer:
        """Write `request` and wait for its whole answer."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._reset()
        self._keep_alive = False
        self.transport.write(request)
        return await self._waiter

    @property
    def reusable(self) -> bool:
        # An answer may come before the whole request was written (a 413):
        # what is left of it would go before the next request.
        transport = self.transport
        return (
            self._keep_alive
            and not self.closed
            and transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() == 0
        )

    def close(self, why: str | None = None) -> None:
        if why is not None:
            self._fail(BadAnswer(why))
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    @property
    def _waiting(self) -> bool:
        return self._waiter is not None and not self._waiter.done()

    def _reset(self) -> None:
        self._chunks, self._size, self._head_size = [], 0, 0
        self._headers_done = self._framed = False

    def _answer(self) -> None:
        if self._waiting:
            assert self._waiter is not None
            status = self._parser.get_status_code()
            self._waiter.set_result(Answer(status, b"".join(self._chunks)))

    def _fail(self, exc: BadAnswer) -> None:
        if self._waiting:
            assert self._waiter is not None
            self._waiter.set_exception(exc)
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpPool:
    """POSTs to one origin over reused connections; see the module."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        limit: int = 100,
        idle_seconds: float = IDLE_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.timeout = timeout
        self.idle_seconds = idle_seconds
        self.max_body = max_body
        self._limit = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._closed = False
        self._ssl: ssl.SSLContext | None = None
        # A URL that cannot work fails each request, not the construction,
        # so the sender reports it as it reports an unreachable server.
        self._invalid: str | None = None
        self.host, self.port, self.prefix = "", 0, ""
        self._host_header = ""
        try:
            self._parse(base_url, ssl_context)
        except ValueError as exc:
            self._invalid = str(exc)
        self._head = self._head_lines(headers)

    async def post(self, path: str, body: bytes) -> Answer:
        """POST `body` to the base URL's path + `path`.

        Raises:
            TimeoutError: no whole answer within the timeout.
            HttpError: no connection, or no answer on it.
        """
        if self._invalid is not None:
            raise InvalidUrl(self._invalid)
        if not _PATH.fullmatch(path):
            raise InvalidUrl(f"{path!r} is not a path of printable ASCII")
        if self._closed:
            raise HttpError("the connection pool is closed")
        request = b"".join(
            (
                f"POST {self.prefix}{path} HTTP/1.1\r\n".encode(),
                self._head,
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            )
        )
        async with asyncio.timeout(self.timeout), self._limit:
            connection = self._reused() or await self._connect()
            self._busy.add(connection)
            try:
                answer = await connection.exchange(request)
            except BaseException:
                connection.close()
                raise
            finally:
                self._busy.discard(connection)
        self._put_back(connection)
        return answer

    async def close(self) -> None:
        """Close every connection; requests on them, and later ones, fail."""
        self._closed = True
        for connection in self._idle:
            connection.close()
        for connection in self._busy:
            connection.close("the connection pool was closed")
        self._idle.clear()
        # Let the transports finish closing before the loop does.
        await asyncio.sleep(0)

    def _parse(self, base_url: str, ssl_context: ssl.SSLContext | None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{base_url!r} is not an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError(f"{base_url!r} names no host")
        if parts.query or parts.fragment or parts.username:
            raise ValueError(f"{base_url!r} has a query, fragment or user part")
        if parts.port == 0:
            raise ValueError(f"{base_url!r} names port 0")
        default_port = 443 if parts.scheme == "https" else 80
        self.host = parts.hostname
        self.port = parts.port or default_port
        # As a browser would send it: a space or a non-ASCII letter escaped.
        self.prefix = quote(parts.path.rstrip("/"), safe="/%:@!$&'()*+,;=~")
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._host_header = host if self.port == default_port else f"{host}:{self.port}"

    def _head_lines(self, headers: Mapping[str, str]) -> bytes:
        lines = {"Host": self._host_header, **headers}
        text = "".join(f"{name}: {value}\r\n" for name, value in lines.items())
        for name, value in lines.items():
            # A line break would end the header early and start another.
            if not f"{name}{value}".isprintable() or not value.isascii():
                raise ValueError(f"the {name} header holds a control or non-ASCII")
        return text.encode("ascii")

    def _reused(self) -> _Connection | None:
        # The most recently used first: the likeliest to be alive.
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            fresh = now - connection.idle_since < self.idle_seconds
            if fresh and connection.reusable:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self.max_body),
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=self.host if self._ssl else None,
            )
        except OSError as exc:
            raise ConnectError(self.host, self.port, exc) from exc
        return connection

    def _put_back(self, connection: _Connection) -> None:
        if connection.reusable and not self._closed:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()
