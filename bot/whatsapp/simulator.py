"""A Graph API simulator: an aiohttp server that plays Meta for tests.

It answers `POST /{version}/{phone_number_id}/messages` with Meta's success
and error shapes, fails on demand (a script of error codes, per recipient if
wanted), checks the token, the obvious send limits and optionally a per-number
rate, and posts signed status webhooks back. Control endpoints under `/_sim/`
drive a simulator running in another process (benchmarks, the demo).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.whatsapp import simulator_answers as answers
from bot.whatsapp.simulator_answers import Answer
from bot.whatsapp.simulator_webhooks import WebhookPoster, status_webhook

log = logging.getLogger("tracbot.simulator")


@dataclass(slots=True)
class _Failure:
    code: int
    remaining: int
    http_status: int | None = None
    to: str | None = None


class Simulator:
    """The simulated Graph API's state: what it received and will answer.

    Args:
        token: the expected bearer token; None accepts any.
        app_secret: the key status webhooks are signed with.
        webhook_url: where status webhooks go; none are sent without it.
        delay: seconds to wait before each answer.
        max_rate: sends per second and phone_number_id above which 130429
            is answered; None for no limit.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        app_secret: str | None = None,
        webhook_url: str | None = None,
        delay: float = 0.0,
        max_rate: float | None = None,
        waba_id: str = "100000000000001",
        display_phone_number: str = "56220000000",
        webhook_retry_seconds: float = 0.0,
    ) -> None:
        self.token = token
        self.app_secret = app_secret
        self.webhook_url = webhook_url
        self.delay = delay
        self.max_rate = max_rate
        self.waba_id = waba_id
        self.display_phone_number = display_phone_number
        self.received: list[dict[str, Any]] = []
        # Requests being answered now, and the most there ever were at once.
        self.in_flight = 0
        self.max_in_flight = 0
        self._initial_delay = delay
        # The `message_status` templates are accepted with (CLOUD_API.md §8).
        self.template_status = "accepted"
        self._failures: list[_Failure] = []
        self._windows: dict[str, deque[float]] = {}
        self._arrived = asyncio.Event()
        self.webhooks = WebhookPoster(retry_seconds=webhook_retry_seconds)

    def fail(self, code: int, times: int = 1, http_status: int | None = None) -> None:
        """Answer the next `times` sends with error `code`.

        Codes 400-599 that are not Graph codes answer an HTML body with that
        HTTP status, like a failing proxy. Mark-read requests never fail.
        """
        self._failures.append(_Failure(code, times, http_status))

    def fail_for(
        self, to: str, code: int, times: int = 1, http_status: int | None = None
    ) -> None:
        """Like `fail`, but only for sends to this recipient."""
        self._failures.append(_Failure(code, times, http_status, answers.wa_id_of(to)))

    def reset(self) -> None:
        """Forget received requests, scripted failures and rate windows."""
        self.received.clear()
        self._failures.clear()
        self._windows.clear()
        self.delay = self._initial_delay
        self.template_status = "accepted"

    async def wait_for(
        self,
        count: int,
        timeout: float = 5.0,  # noqa: ASYNC109 - a plain timeout reads best in tests
    ) -> list[dict[str, Any]]:
        """Wait until `count` requests were received and return them."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.received) < count:
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            got = len(self.received)
            raise TimeoutError(f"Received {got} of {count} requests") from None
        return self.received[:count]

    @property
    def pending_failures(self) -> int:
        """How many scripted failures are still queued (all recipients)."""
        return sum(failure.remaining for failure in self._failures)

    async def handle(
        self, version: str, phone_number_id: str, authorization: str | None, raw: bytes
    ) -> Answer:
        """Answer one `/messages` request as Meta would."""
        body = _json_object(raw)
        answer = self._decide(phone_number_id, authorization, body)
        self._record(version, phone_number_id, body, answer)

        if self.delay > 0:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.delay)
            finally:
                self.in_flight -= 1

        # Statuses follow the answer, as Meta's do, even if the client gave up.
        if answer.wamid is not None and body is not None:
            self._post_statuses_later(phone_number_id, body, answer.wamid)
        return answer

    def _decide(
        self, phone_number_id: str, authorization: str | None, body: dict | None
    ) -> Answer:
        if self.token is not None and authorization != f"Bearer {self.token}":
            return answers.error_answer(190)
        if body is None:
            return answers.error_answer(100, details="The body is not a JSON object.")
        if body.get("status") == "read":
            if not isinstance(body.get("message_id"), str):
                details = "The parameter message_id is required."
                return answers.error_answer(100, details=details)
            return answers.read_success()

        problem = answers.limit_error(body)
        if problem is not None:
            code, details = problem
            return answers.error_answer(code, details=details)

        failure = self._take_failure(body["to"])
        if failure is not None:
            return answers.error_answer(failure.code, failure.http_status)

        if self._over_rate(phone_number_id):
            return answers.error_answer(130429)

        template = body.get("type") == "template"
        return answers.send_success(
            body["to"], template=template, template_status=self.template_status
        )

    def _take_failure(self, to: str) -> _Failure | None:
        wa_id = answers.wa_id_of(to)
        for failure in self._failures:
            if failure.to is None or failure.to == wa_id:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    def _over_rate(self, phone_number_id: str) -> bool:
        if not self.max_rate:
            return False

        # A sliding one-second window of accepted sends per number; refused
        # sends do not count, as they did not reach the recipient.
        now = time.monotonic()
        window = self._windows.setdefault(phone_number_id, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= self.max_rate:
            return True
        window.append(now)
        return False

    def _record(
        self, version: str, phone_number_id: str, body: dict | None, answer: Answer
    ) -> None:
        self.received.append(
            {
                "version": version,
                "phone_number_id": phone_number_id,
                "body": body,
                "status": answer.status,
                "code": answer.code,
                "wamid": answer.wamid,
                # When it arrived, so that a test can check the sender's pace.
                "at": time.monotonic(),
            }
        )
        self._arrived.set()

    def _post_statuses_later(
        self, phone_number_id: str, body: dict, wamid: str
    ) -> None:
        if not (self.webhook_url and self.app_secret):
            return
        bodies = [
            status_webhook(
                waba_id=self.waba_id,
                display_phone_number=self.display_phone_number,
                phone_number_id=phone_number_id,
                wamid=wamid,
                status=status,
                to=body["to"],
                callback_data=body.get("biz_opaque_callback_data"),
            )
            for status in ("sent", "delivered")
        ]
        self.webhooks.post_later(self.webhook_url, self.app_secret, bodies)


SIMULATOR_KEY = web.AppKey("simulator", Simulator)


def make_app(simulator: Simulator) -> web.Application:
    """The simulator's aiohttp application: Graph routes plus `/_sim/` controls."""
    app = web.Application()
    app[SIMULATOR_KEY] = simulator
    app.cleanup_ctx.append(_webhook_poster)
    app.router.add_post(r"/{version:v\d+\.\d+}/{phone_number_id}/messages", _messages)
    app.router.add_get("/_sim/messages", _control_messages)
    app.router.add_get("/_sim/count", _control_count)
    app.router.add_post("/_sim/fail", _control_fail)
    app.router.add_post("/_sim/delay", _control_delay)
    app.router.add_post("/_sim/reset", _control_reset)
    return app


@contextlib.asynccontextmanager
async def serve(
    simulator: Simulator, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Run the simulator on host:port while the block runs; yields its base URL."""
    runner = web.AppRunner(make_app(simulator))
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        if ":" in bound_host:
            bound_host = f"[{bound_host}]"
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()


async def run_simulator(host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
    """Serve a simulator until cancelled; options go to `Simulator`."""
    async with serve(Simulator(**options), host, port) as url:
        log.info("graph simulator listening url=%s", url)
        await asyncio.Event().wait()


def main(host: str = "127.0.0.1", port: int = 8090, **options: Any) -> None:
    """Blocking entry point for `tracbot simulator`; stops on Ctrl-C."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_simulator(host, port, **options))


async def _webhook_poster(app: web.Application) -> AsyncIterator[None]:
    poster = app[SIMULATOR_KEY].webhooks
    await poster.open()
    yield
    await poster.close()


async def _messages(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR_KEY]
    answer = await simulator.handle(
        request.match_info["version"],
        request.match_info["phone_number_id"],
        request.headers.get("Authorization"),
        await request.read(),
    )
    return web.Response(
        status=answer.status, body=answer.body, content_type=answer.content_type
    )


async def _control_messages(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR_KEY].received)


async def _control_count(request: web.Request) -> web.Response:
    # Benchmarks poll this while a load runs: a count is cheap where the
    # whole list of received requests is not.
    received = request.app[SIMULATOR_KEY].received
    reads = sum(1 for r in received if (r["body"] or {}).get("status") == "read")
    accepted = sum(1 for r in received if r["wamid"] is not None)
    counts = {"received": len(received), "reads": reads, "accepted": accepted}
    return web.json_response(counts)


async def _control_fail(request: web.Request) -> web.Response:
    data = _json_object(await request.read()) or {}
    code, times = data.get("code"), data.get("times", 1)
    http_status, to = data.get("http_status"), data.get("to")
    if not _ints(code, times) or not _ints(http_status or 0):
        return _bad_request("code, times and http_status must be integers")
    if to is not None and not isinstance(to, str):
        return _bad_request("to must be a string")

    simulator = request.app[SIMULATOR_KEY]
    if to is None:
        simulator.fail(code, times, http_status)
    else:
        simulator.fail_for(to, code, times, http_status)
    return web.json_response({"pending": simulator.pending_failures})


async def _control_delay(request: web.Request) -> web.Response:
    seconds = (_json_object(await request.read()) or {}).get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        return _bad_request("seconds must be a number >= 0")
    request.app[SIMULATOR_KEY].delay = float(seconds)
    return web.json_response({"delay": float(seconds)})


async def _control_reset(request: web.Request) -> web.Response:
    request.app[SIMULATOR_KEY].reset()
    return web.json_response({"reset": True})


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _ints(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def _bad_request(reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=400)
