"""Status webhooks applied to the message log (CLOUD_API.md §3, §6).

A message's status only moves forward (sent < delivered < read), whatever
order the webhooks arrive in; `failed` keeps its code and details. A failed
status with 131047 means the 24-hour window had closed by the time Meta
tried: the message's template fallback, if it has one, is queued, once.

Every send carries its outbox id in `biz_opaque_callback_data`, which Meta
echoes in the message's statuses. A status whose wamid we never recorded
(the send's answer was lost to a timeout or a crash, or the status came
before the sender wrote the answer down) still finds its message by it:
the message takes the wamid and the status, and is not sent again.
"""

from __future__ import annotations

import logging

from bot.whatsapp.events import StatusUpdate
from storage.base import Store

log = logging.getLogger("tracbot.sender")

WINDOW_CLOSED = 131047

# Statuses that say a message is on the phone: no template goes after it.
REACHED = frozenset({"delivered", "read", "played"})

# How a send names its outbox item in `biz_opaque_callback_data`.
CALLBACK_PREFIX = "tracbot:outbox:"


def callback_data(item_id: int) -> str:
    """The `biz_opaque_callback_data` of a send of outbox item `item_id`."""
    return f"{CALLBACK_PREFIX}{item_id}"


def outbox_id_of(status: StatusUpdate) -> int | None:
    """The outbox id a status echoes from our send, if it echoes one."""
    data = status.raw.get("biz_opaque_callback_data")
    if not isinstance(data, str) or not data.startswith(CALLBACK_PREFIX):
        return None
    number = data.removeprefix(CALLBACK_PREFIX)
    return int(number) if number.isascii() and number.isdigit() else None


async def record_status(store: Store, status: StatusUpdate) -> bool:
    """Apply one status webhook; return False if the wamid is not ours.

    A status for an unknown wamid is normal when other tools share the
    number; the caller skips it and goes on with the rest of the body.
    """
    error = status.errors[0] if status.errors else {}
    detail = (error.get("error_data") or {}).get("details") or error.get("title")
    window_closed = status.status == "failed" and status.error_code == WINDOW_CLOSED
    # Read before the status applies: a 131047 that comes after the message
    # reached the phone is late news, not a closed window, and its template
    # sent the driver what they had read already.
    reached = window_closed and await _reached(store, status.wamid)
    known = await store.apply_status(
        status.wamid, status.status, status.error_code, detail
    )
    if not known and not await _adopted(store, status, detail):
        log.info(
            "status for an unknown message skipped status=%s wamid=…%s",
            status.status,
            status.wamid[-6:],
        )
        return False

    if reached:
        log.info(
            "window-closed failure for a message already delivered, no "
            "template sent wamid=…%s",
            status.wamid[-6:],
        )
    elif window_closed:
        await _fallback(store, status.wamid)
    return True


async def _reached(store: Store, wamid: str) -> bool:
    item = await store.outbox_by_wamid(wamid)
    return item is not None and item.status in REACHED


async def _adopted(store: Store, status: StatusUpdate, detail: str | None) -> bool:
    item_id = outbox_id_of(status)
    if item_id is None:
        return False
    adopted = await store.adopt_status(
        item_id, status.wamid, status.status, status.error_code, detail
    )
    if adopted:
        # Often only a status faster than the send's answer; after a lost
        # answer (a timeout, a crash), what keeps a reply from going twice.
        log.info(
            "status recorded by the send's callback data id=%s status=%s: "
            "not sent again",
            item_id,
            status.status,
        )
    return adopted


async def _fallback(store: Store, wamid: str) -> None:
    item = await store.outbox_by_wamid(wamid)
    if item is None:
        return
    template = await store.add_fallback(item.id, replace=False)
    if template is None:
        log.warning("window closed, no template fallback id=%s", item.id)
    else:
        log.info(
            "window closed: template queued id=%s template_id=%s", item.id, template.id
        )
