"""Inactivity timeouts, driven by deadlines stored with each conversation.

When a flow has a `timeout`, every step that leaves the driver inside it
stores `deadline = now + after`. The sweeper asks the store for
conversations whose deadline has passed and puts one `timeout` event per
deadline into the inbox, keyed by phone and deadline: the dispatcher then
handles it in that phone's order like any message (so it never races a
message the driver sends at the same moment), and a second sweeper, in this
process or another, adds nothing new. No timer lives in memory, so a
restart loses no timeout: the next sweep finds what expired meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot.engine.flows import FlowSpec
from bot.logs import Repeated
from bot.whatsapp.events import Notice, to_json
from storage.base import Conversation, NewInboxEvent, Store, utcnow
from storage.errors import StorageError

if TYPE_CHECKING:
    from bot.engine.engine import Engine

log = logging.getLogger("tracbot.engine")

TOPIC = "timeout"
SWEEP_SECONDS = 5.0
BATCH = 200


def deadline_for(flow: FlowSpec, now: datetime | None = None) -> datetime | None:
    """When a driver left in `flow` times out, or None if it never does."""
    if flow.timeout is None:
        return None
    return (now or utcnow()) + timedelta(seconds=flow.timeout.seconds)


def expired(conversation: Conversation, now: datetime | None = None) -> bool:
    """Whether the conversation's stored deadline has passed."""
    deadline = conversation.deadline
    return deadline is not None and deadline <= (now or utcnow())


async def sweep_once(
    store: Store, now: datetime, phone_number_id: str, limit: int = BATCH
) -> int:
    """Queue a timeout event for each expired conversation; return how many."""
    events = [
        NewInboxEvent(
            key=f"{TOPIC}:{c.wa_id}:{c.deadline.isoformat()}",
            kind="notice",
            wa_id=c.wa_id,
            phone_number_id=phone_number_id,
            payload=to_json(_notice(c, phone_number_id)),
        )
        for c in await store.expired_conversations(now, limit)
        if c.deadline is not None
    ]
    if not events:
        return 0
    return await store.add_events(events)


def _notice(conversation: Conversation, phone_number_id: str) -> Notice:
    assert conversation.deadline is not None
    body = {"deadline": conversation.deadline.isoformat()}
    return Notice(topic=TOPIC, body=body, phone_number_id=phone_number_id)


def is_timeout(notice: Notice) -> bool:
    """Whether an inbox notice is one the sweeper queued."""
    return notice.topic == TOPIC


def still_due(notice: Notice, conversation: Conversation) -> bool:
    """Whether the deadline a timeout event was queued for still stands.

    A message that arrived after the sweep moved the deadline (or ended the
    flow); the stale event then does nothing.
    """
    deadline = conversation.deadline
    return deadline is not None and deadline.isoformat() == notice.body.get("deadline")


def expire(engine: Engine, conversation: Conversation) -> list[str]:
    """Reset an expired conversation; return its flow's timeout reply, if any."""
    compiled = engine.flows.get(conversation.flow or "")
    replies: list[str] = []
    timeout = compiled.spec.timeout if compiled is not None else None
    if timeout is not None and timeout.reply:
        # As a reply in the state it expired in sees them.
        slots = conversation.slots
        context = {
            **engine.silent_context(conversation.wa_id),
            **slots,
            "slots": dict(slots),
        }
        replies.append(engine.renderer.render_or_apologise(timeout.reply, context))

    log.info(
        "conversation timed out flow=%s state=%s replies=%d",
        conversation.flow,
        conversation.state,
        len(replies),
    )
    conversation.flow = conversation.state = conversation.flow_version = None
    conversation.slots = {}
    conversation.deadline = None
    return replies


async def run_sweeper(
    store: Store,
    phone_number_id: str,
    wake: Callable[[], None],
    interval: float = SWEEP_SECONDS,
) -> None:
    """Sweep for expired conversations every `interval` seconds until cancelled."""
    # An outage failed every sweep: an ERROR every 5 s, now once a while.
    failing = Repeated(log)
    while True:
        try:
            if await sweep_once(store, utcnow(), phone_number_id):
                wake()
            failing.succeeded("timeout sweep works again")
        except StorageError as exc:
            failing.failed("timeout sweep failed, will retry: %s", exc)
        except Exception:
            failing.failed("timeout sweep failed, will retry", exc_info=True)
        await asyncio.sleep(interval)
