"""Mounting the backend API and the operator endpoints on the service.

`/healthz` says the process answers; `/readyz` says it can take webhooks
and process them (storage reachable and writable, processing not paused;
a 503 otherwise), and warns, keeping its 200, of what holds the replies
back without stopping that (a refused token, a Graph API that does not
answer) or what an operator should see; `/metrics` is the Prometheus
scrape. They carry no token: bind the service where only
the load balancer and Prometheus reach it, or filter those paths.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from aiohttp import web

from bot import metrics
from bot.api.notifications import Notifier
from bot.api.routes import BackendApi, json_errors
from bot.whatsapp.webhook import WebhookHandler
from storage.base import QueueStats, utcnow
from storage.errors import StorageError

if TYPE_CHECKING:
    from bot.app import Runtime

log = logging.getLogger("tracbot.api")


def mount(app: web.Application, runtime: Runtime, webhook: WebhookHandler) -> None:
    """Add the backend API, health, readiness and metrics routes."""
    settings = runtime.settings
    if not settings.api.tokens:
        log.warning("backend API has no token configured: every call gets 401")
    for var in settings.api.unset:
        log.warning("backend API token variable %s", var)

    notifier = Notifier(
        renderer=lambda: runtime.engine.renderer,
        templates=dict(settings.templates),
        phone_number_id=settings.whatsapp.phone_number_id,
        timezone=settings.api.timezone,
    )
    api = BackendApi(runtime.store, notifier, settings.api, runtime.wake_sender)
    ops = _Operations(runtime, webhook)
    app.router.add_routes(api.routes())
    app.middlewares.append(json_errors)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)


# Messages the engine failed on in a row before /readyz warns of it.
FAILING_AFTER = 3


class _Operations:
    def __init__(self, runtime: Runtime, webhook: WebhookHandler) -> None:
        self.runtime = runtime
        self.webhook = webhook

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        problems, stats = await self._problems()
        body: dict[str, object] = {"status": "not ready" if problems else "ready"}
        if problems:
            body["problems"] = problems
        warnings = self._warnings()
        if warnings:
            body["warnings"] = warnings
        if stats is not None:
            body["inbox_pending"] = stats.inbox_pending
            body["outbox_queued"] = stats.outbox_queued
        return web.json_response(body, status=503 if problems else 200)

    async def _problems(self) -> tuple[list[str], QueueStats | None]:
        """What keeps this process from taking and processing webhooks (a
        503 of /readyz), and the queue depths if the store answered."""
        problems = []
        try:
            stats = await self.runtime.store.queue_stats()
        except (StorageError, NotImplementedError) as exc:
            problems.append(f"storage: {exc}")
            stats = None
        trouble = self.runtime.store.problem()
        if trouble is not None:
            problems.append(f"storage: {trouble}")
        store_problem = self.webhook.store_problem
        if store_problem is not None:
            # Reads may still work (a lock held elsewhere): writes do not.
            problems.append(
                f"storage: the last webhook could not be stored: {store_problem}"
            )
        if self.runtime.settings.engine.max_concurrent_phones == 0:
            # Stored, never answered: a pause to see, or a slip to undo.
            problems.append(
                "processing: paused by engine.max_concurrent_phones: 0 "
                "(this process stores webhooks and answers none)"
            )
        worker = self.runtime.worker
        if worker is not None and not worker.alive:
            problems.append("processing: the thread has stopped (see the log)")
        if self.runtime.sender is None:
            problems.append("sender: not started")
        return problems, stats

    def _warnings(self) -> list[str]:
        """What an operator should see, that does not stop this process from
        serving (a 503 would take it out of a load balancer)."""
        warnings = []
        refused = self.webhook.refusals
        if refused.count >= refused.at_least:
            # Not a problem: anyone can POST unsigned bytes, and readiness
            # must not be theirs to take away. A wrong app secret looks like
            # this.
            warnings.append(
                f"webhook: the last {refused.count} POSTs were refused for their "
                "signature, none accepted since; WHATSAPP_APP_SECRET may be wrong"
            )
        sender = self.runtime.sender
        # Not a 503: webhooks are still stored and answered 200, the replies
        # wait in the outbox, and every instance meets the same Graph API; a
        # 503 took them all out of the load balancer, and Meta's webhooks
        # with them.
        if sender is not None and sender.held:
            warnings.append(
                "sender: held, the access token was refused; replies wait in the "
                "outbox until a valid WHATSAPP_API_TOKEN is configured"
            )
        elif sender is not None and sender.unreachable:
            warnings.append(
                f"sender: the last {sender.network_failures} Graph API requests "
                f"failed: {sender.network_reason}; replies wait in the outbox"
            )
        dispatcher = self.runtime.dispatcher
        if dispatcher is not None and dispatcher.failing_in_a_row >= FAILING_AFTER:
            # Not a 503: the webhooks are still stored and answered 200.
            warnings.append(
                f"engine: the last {dispatcher.failing_in_a_row} messages failed "
                "and their drivers got the apology (a business database or an "
                "action broken?); see the log"
            )
        reloader = self.runtime.reloader
        if reloader is not None and reloader.refused:
            # The version before serves; a restart would not start at all.
            warnings.append(
                "flows: the files on disk were refused at reload "
                f"({reloader.refused}); the previous version keeps serving, but "
                "a restart would refuse to start: fix them (tracbot check)"
            )
        return warnings

    async def metrics(self, request: web.Request) -> web.Response:
        blocks = [
            metrics.labelled_counter(
                "tracbot_webhook_requests_total",
                "Webhook POSTs answered, by HTTP status.",
                "outcome",
                self.webhook.counts.items(),
            ),
            metrics.labelled_counter(
                "tracbot_webhook_signature_failures_total",
                "Webhook POSTs refused for their signature (missing: no header; "
                "mismatch: a wrong WHATSAPP_APP_SECRET or a forged body).",
                "reason",
                self.webhook.signature_failures.items(),
            ),
        ]
        # A dashboard on Prometheus alone saw nothing of a deleted database
        # file or a Graph API that stopped answering.
        problems, stats = await self._problems()
        blocks.append(
            metrics.gauge(
                "tracbot_ready",
                "1 while /readyz answers 200 (webhooks stored and processed).",
                0 if problems else 1,
            )
        )
        if stats is None:
            log.warning("metrics without queue depths: %s", "; ".join(problems))
        else:
            blocks += _queue_gauges(stats, utcnow())

        dispatcher = self.runtime.dispatcher
        if dispatcher is not None:
            blocks.append(
                metrics.counter(
                    "tracbot_engine_failures_total",
                    "Messages the engine failed on; their drivers got the apology.",
                    dispatcher.engine_failures,
                )
            )
        sender = self.runtime.sender
        if sender is not None:
            blocks += [
                metrics.gauge(
                    "tracbot_sender_held",
                    "1 while sending is held by a refused access token.",
                    1 if sender.held else 0,
                ),
                metrics.gauge(
                    "tracbot_graph_api_unreachable",
                    "1 while the last Graph API requests all failed on the way.",
                    1 if sender.unreachable else 0,
                ),
                sender.metrics.latency.lines(),
                sender.metrics.attempts.lines(),
                sender.metrics.errors.lines(),
            ]
        return web.Response(
            body=metrics.exposition(*blocks).encode(),
            headers={"Content-Type": metrics.CONTENT_TYPE},
        )


def _queue_gauges(stats: QueueStats, now: datetime) -> list[list[str]]:
    lag = (now - stats.inbox_oldest_at).total_seconds() if stats.inbox_oldest_at else 0
    return [
        metrics.gauge(
            "tracbot_inbox_lag_seconds",
            "Age of the oldest unprocessed inbox event.",
            max(lag, 0.0),
        ),
        metrics.gauge(
            "tracbot_inbox_pending",
            "Inbox events not processed yet.",
            stats.inbox_pending,
        ),
        metrics.gauge(
            "tracbot_outbox_depth",
            "Outbound items queued or being sent.",
            stats.outbox_queued,
        ),
    ]
