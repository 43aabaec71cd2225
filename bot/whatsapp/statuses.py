"""Status webhooks applied to the message log (CLOUD_API.md §3, §6).

A message's status only moves forward (sent < delivered < read), whatever
order the webhooks arrive in; `failed` keeps its code and details. A failed
status with 131047 means the 24-hour window had closed by the time Meta
tried: the message's template fallback, if it has one, is queued, once.
"""

from __future__ import annotations

import logging

from bot.whatsapp.events import StatusUpdate
from storage.base import Store

log = logging.getLogger("tracbot.sender")

WINDOW_CLOSED = 131047


async def record_status(store: Store, status: StatusUpdate) -> bool:
    """Apply one status webhook; return False if the wamid is not ours.

    A status for an unknown wamid is normal when other tools share the
    number; the caller skips it and goes on with the rest of the body.
    """
    error = status.errors[0] if status.errors else {}
    detail = (error.get("error_data") or {}).get("details") or error.get("title")
    known = await store.apply_status(
        status.wamid, status.status, status.error_code, detail
    )
    if not known:
        log.info("status for an unknown message skipped status=%s", status.status)
        return False

    if status.status == "failed" and status.error_code == WINDOW_CLOSED:
        await _fallback(store, status.wamid)
    return True


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
