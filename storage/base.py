"""The storage interface every backend implements.

tracbot keeps five things: the inbox (every webhook event, keyed so that a
redelivery is a no-op), conversations (one row per phone: flow, state,
slots), the outbox (every message we send, with its delivery status), the
account links of drivers, and the attempts log of the sender. A backend is
chosen by URL (`sqlite:///path`, `postgresql://…`, `odbc://…`).

The engine's unit of work is `commit_step`: the new conversation, the
replies it produced and the inbox event's done mark are written in one
transaction, so a crash either replays the event or has sent nothing twice.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# Outbound statuses in the order they may advance. `failed` is terminal but a
# later delivered/read from another device is still accepted (CLOUD_API.md §3).
STATUS_RANK = {
    "queued": 0,
    "sending": 1,
    "accepted": 2,
    # Accepted, then held back by Meta (CLOUD_API.md §8): sent, delivered
    # or failed may still follow.
    "held_for_quality_assessment": 2,
    "paused": 2,
    "sent": 3,
    "delivered": 4,
    "read": 5,
    "played": 6,
    "failed": 7,
    # Never reached Meta: its template fallback went out instead.
    "replaced": 8,
}


# A `sending` outbox item older than this was taken by a sender that died:
# every backend hands it out again (`due_outbox`). The sender keeps what it
# takes well inside it (bot/whatsapp/sender.py).
SENDING_LEASE = timedelta(minutes=2)

# How long an item left `sending` by a process that died waits before it
# goes again: Meta may have it, and its status, which finds it by its
# callback data, comes within seconds if so (bot/whatsapp/statuses.py).
RESEND_WAIT = timedelta(seconds=30)

# Outbox statuses nothing changes any more but a late status webhook: what
# `prune` may delete once old enough.
FINISHED = ("accepted", "sent", "delivered", "read", "played", "failed", "replaced")
# Rows `prune` deletes in one transaction: a writer of its own, it holds the
# server's writes back (a SQLite file) for a batch at most.
PRUNE_BATCH = 2000
# What `prune` deletes: (table, its key, which rows may go, their time
# column). An outbox item's attempts go with it.
PRUNED = (
    ("outbox", "id", "status IN ({finished})", "updated_at"),
    ("inbox", "id", "done_at IS NOT NULL", "received_at"),
    ("link_attempts", "id", "1 = 1", "at"),
    ("api_requests", "idem_key", "1 = 1", "created_at"),
)


def pruned_tables() -> list[tuple[str, str, str, str]]:
    """`PRUNED`, with the finished statuses written into the SQL."""
    finished = ", ".join(f"'{status}'" for status in FINISHED)
    return [
        (table, key, condition.format(finished=finished), column)
        for table, key, condition, column in PRUNED
    ]


# The per-phone order of `due_outbox`, as SQL every backend speaks, on an
# outbox row `o`: an item waits while an older item of its phone is
# unfinished, so a phone's messages leave in order whatever their retries;
# read marks hold nothing back; a conversation reply waits only for older
# replies, and a notification for every reply of its phone still to go.
EARLIER_UNFINISHED = (
    "NOT EXISTS (SELECT 1 FROM outbox e WHERE e.wa_id = o.wa_id "
    "AND e.kind <> 'read' "
    "AND (e.inbox_id IS NOT NULL OR o.inbox_id IS NULL) "
    "AND (e.id < o.id OR (o.inbox_id IS NULL AND e.inbox_id IS NOT NULL)) "
    "AND e.status IN ('queued', 'sending'))"
)


# What the sender's own outcome of a send may still change: an item that a
# status webhook gave its wamid (`adopt_status`) is Meta's already, and a
# late timeout or error of the same send must not queue it again.
NOT_ADOPTED = "wamid IS NULL"

# `adopt_status`, with `?` markers: the wamid and status of a status
# webhook, for the item its send's callback data names, if still to go.
ADOPT_STATUS = (
    "UPDATE outbox SET wamid = ?, status = ?, "
    "error_code = COALESCE(?, error_code), "
    "error_detail = COALESCE(?, error_detail), updated_at = ? "
    f"WHERE id = ? AND {NOT_ADOPTED} AND status IN ('queued', 'sending')"
)


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class NewInboxEvent:
    """An event about to enter the inbox."""

    key: str
    kind: str
    wa_id: str | None
    phone_number_id: str | None
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class InboxEvent:
    """An event stored in the inbox."""

    id: int
    key: str
    kind: str
    wa_id: str | None
    phone_number_id: str | None
    payload: dict[str, Any]
    received_at: datetime


@dataclass(slots=True)
class Conversation:
    """The state of one phone's conversation, loaded for one event."""

    wa_id: str
    flow: str | None = None
    state: str | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    flow_version: str | None = None
    last_inbound_at: datetime | None = None
    deadline: datetime | None = None


@dataclass(frozen=True, slots=True)
class Turns:
    """A phone's next events and its conversation (`Store.next_turns`)."""

    events: list[InboxEvent]
    conversation: Conversation | None
    drained: bool


@dataclass(frozen=True, slots=True)
class NewOutbound:
    """A message the engine wants sent.

    `kind` is `message` for a Graph API message body (text, interactive,
    template…) or `read` to mark the inbound `body["message_id"]` read.
    """

    wa_id: str
    phone_number_id: str
    kind: str
    body: dict[str, Any]
    # The template message body to send instead when the 24-hour window is
    # closed (CLOUD_API.md §11); None sends `body` whatever the window.
    fallback: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Keyed:
    """A backend API call made with an Idempotency-Key, as `enqueue` keeps it.

    `answer` turns the ids of the queued messages into the body the call
    answers; it is stored with them, in their transaction, so that the same
    call again gets the same body and queues nothing.
    """

    key: str
    fingerprint: str
    answer: Callable[[list[int]], str]


@dataclass(frozen=True, slots=True)
class KeptAnswer:
    """What a keyed call answered: its request's fingerprint and its body."""

    fingerprint: str
    response: str


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A stored outbound message."""

    id: int
    wa_id: str
    phone_number_id: str
    kind: str
    body: dict[str, Any]
    status: str
    attempts: int
    wamid: str | None
    created_at: datetime
    fallback: dict[str, Any] | None = None
    fallback_of: int | None = None
    error_code: int | None = None
    error_detail: str | None = None


@dataclass(frozen=True, slots=True)
class Link:
    """A phone linked to a driver account of the business data."""

    wa_id: str
    driver_id: str
    rut: str
    name: str
    role: str
    method: str  # "rut" (the driver confirmed it) or "phone" (on file)
    linked_at: datetime


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One message of a phone's history, inbound or outbound."""

    direction: str  # "in" or "out"
    id: int  # inbox id or outbox id, by direction
    body: dict[str, Any]  # the outbound body, or the inbound event's JSON
    status: str
    wamid: str | None
    error_code: int | None
    error_detail: str | None
    at: datetime
    # The outgoing message this one went out instead of (its template, the
    # window being closed): the id a send call answered is that other one.
    replaces: int | None = None


@dataclass(frozen=True, slots=True)
class DeliveryCounts:
    """Outbound messages created in a period, by how far they got."""

    total: int = 0
    queued: int = 0
    sent: int = 0
    delivered: int = 0
    read: int = 0
    failed: int = 0

    @classmethod
    def tally(cls, rows: Iterable[tuple[str, bool, int]]) -> DeliveryCounts:
        """Count `(status, accepted by Meta, how many)` rows.

        Statuses only move forward, so a read message was delivered and a
        delivered one sent: each count includes the later statuses.
        """
        counts = dict.fromkeys(("total", "queued", "sent", "delivered"), 0)
        counts.update(read=0, failed=0)
        for status, accepted, n in rows:
            counts["total"] += n
            counts["queued"] += n if status in ("queued", "sending") else 0
            counts["sent"] += n if accepted else 0
            counts["delivered"] += n if status in ("delivered", "read", "played") else 0
            counts["read"] += n if status in ("read", "played") else 0
            counts["failed"] += n if status == "failed" else 0
        return cls(**counts)


@dataclass(frozen=True, slots=True)
class QueueStats:
    """The depth of the inbox and the outbox, for metrics and readiness."""

    inbox_pending: int
    inbox_oldest_at: datetime | None
    outbox_queued: int


class Store(abc.ABC):
    """Persistence for tracbot; see the module docstring."""

    url: str
    # Whether a second store on the same URL sees the same data (not so for
    # an in-memory SQLite database, private to its connection).
    shared: bool = True

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and apply pending migrations."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every connection."""

    # Inbox

    @abc.abstractmethod
    async def add_events(self, events: Sequence[NewInboxEvent]) -> int:
        """Store events, ignoring keys already stored; return how many were new."""

    @abc.abstractmethod
    async def pending_phones(self, limit: int = 100) -> list[str]:
        """Return phones with unprocessed events, the longest waiting first."""

    @abc.abstractmethod
    async def next_event(self, wa_id: str) -> InboxEvent | None:
        """Return the oldest unprocessed event of a phone."""

    async def next_turn(
        self, wa_id: str
    ) -> tuple[InboxEvent | None, Conversation | None]:
        """Return a phone's oldest unprocessed event and its conversation.

        One round trip where a backend can (the dispatcher's hot path). A
        phone without a stored conversation gets a new, empty one; there is
        none when there is no event or `wa_id` is empty (events of no phone).
        """
        event = await self.next_event(wa_id)
        if event is None or not wa_id:
            return event, None
        conversation = await self.load_conversation(wa_id)
        return event, conversation or Conversation(wa_id=wa_id)

    async def next_turns(self, wa_id: str, limit: int) -> Turns:
        """Return up to `limit` of a phone's oldest unprocessed events, in
        order, with its conversation (as `next_turn`), in one round trip
        where a backend can.

        `drained` is True when no other event of the phone was pending at
        the time of reading, so the caller need not ask again; a backend
        that cannot tell says False unless it found nothing.
        """
        event, conversation = await self.next_turn(wa_id)
        if event is None:
            return Turns([], conversation, drained=True)
        return Turns([event], conversation, drained=False)

    @abc.abstractmethod
    async def pending_count(self) -> int:
        """Return how many inbox events wait to be processed."""

    def problem(self) -> str | None:
        """What keeps the store from working that calls do not show, if
        anything (for /readyz); None when all is well."""
        return None

    @property
    def max_claims(self) -> int | None:
        """How many claims the store can hold at once, None if no limit.

        A server backend holds a pooled connection per claim; the dispatcher
        runs no more phones at once than this, so that no claim waits for a
        connection that other claims hold.
        """
        return None

    @contextlib.asynccontextmanager
    async def claim(self, wa_id: str) -> AsyncIterator[bool]:
        """Hold the right to process this phone's events; yield False if taken.

        The embedded backend serves one process, whose dispatcher already
        runs one task per phone; server backends lock in the database.
        """
        yield True

    # Conversations

    @abc.abstractmethod
    async def load_conversation(self, wa_id: str) -> Conversation | None:
        """Return a phone's conversation, or None if it has none."""

    @abc.abstractmethod
    async def expired_conversations(
        self, now: datetime, limit: int = 100
    ) -> list[Conversation]:
        """Return conversations whose `deadline` is at or before `now`,
        the earliest deadline first (the timeout sweeper's query)."""

    @abc.abstractmethod
    async def commit_step(
        self,
        event_id: int,
        conversation: Conversation | None,
        replies: Sequence[NewOutbound],
    ) -> list[int]:
        """In one transaction: save the conversation, queue the replies and
        mark the event done. Return the outbox ids of the replies.

        Raises:
            EventDone: the event is not pending (already done by another
                process or an earlier replay); nothing was written.
        """

    # Outbox

    @abc.abstractmethod
    async def enqueue(
        self, replies: Sequence[NewOutbound], keyed: Keyed | None = None
    ) -> list[int]:
        """Queue messages that no inbox event caused (notifications).

        With `keyed`, its answer is kept in the same transaction.

        Raises:
            KeyInUse: another call with that key was kept first; nothing
                was queued.
        """

    @abc.abstractmethod
    async def kept_answer(self, key: str) -> KeptAnswer | None:
        """What the call kept under an Idempotency-Key answered, if any."""

    @abc.abstractmethod
    async def due_outbox(self, limit: int = 50) -> list[OutboxItem]:
        """Take queued items whose time has come and mark them `sending`.

        Per-recipient order: an item is not taken while an older item of
        the same `wa_id` is still `queued` or `sending` (a retry keeps the
        later ones waiting). A conversation reply waits only for older
        replies, and a notification or alert also for every reply of its
        phone still to go: a driver's answers do not queue behind the
        notifications already waiting for that phone, which leave in their
        order once the answers are out. Read marks hold nothing back. Concurrent callers
        (other processes) never take one item twice; a `sending` item whose
        sender died is taken again after a lease. Replies are taken before
        the rest, each oldest first.
        """

    @abc.abstractmethod
    async def mark_sent(self, item_id: int, wamid: str | None, status: str) -> None:
        """Record that the Graph API accepted an item."""

    @abc.abstractmethod
    async def mark_retry(
        self, item_id: int, next_attempt_at: datetime, error: str
    ) -> None:
        """Put an item back in the queue for a later attempt."""

    @abc.abstractmethod
    async def mark_failed(self, item_id: int, code: int | None, detail: str) -> None:
        """Record that an item will never be sent."""

    @abc.abstractmethod
    async def apply_status(
        self,
        wamid: str,
        status: str,
        error_code: int | None = None,
        error_detail: str | None = None,
    ) -> bool:
        """Move a sent message's status forward; False if the wamid is unknown."""

    @abc.abstractmethod
    async def outbox_items(self, wa_id: str | None = None) -> list[OutboxItem]:
        """Return stored outbound items, oldest first (for tests and history)."""

    # Delivery (sender, status webhooks, backend API). Not abstract so that
    # a backend without them still serves the webhook and the engine.

    async def record_attempt(
        self,
        item_id: int,
        attempt: int,
        outcome: str,
        ms: int,
        error_code: int | None = None,
        detail: str | None = None,
    ) -> None:
        """Log one request of the sender for an item and its outcome."""
        raise NotImplementedError(f"{type(self).__name__}: record_attempt")

    async def record_sent(
        self, item_id: int, wamid: str | None, status: str, attempt: int, ms: int
    ) -> None:
        """`mark_sent`, and log the attempt as `accepted` (detail: the wamid).

        One round trip where a backend can (the sender's hot path).
        """
        await self.mark_sent(item_id, wamid, status)
        await self.record_attempt(item_id, attempt, "accepted", ms, None, wamid)

    async def adopt_status(
        self,
        item_id: int,
        wamid: str,
        status: str,
        error_code: int | None = None,
        error_detail: str | None = None,
    ) -> bool:
        """Give a status webhook's wamid and status to the item its send's
        callback data names, if it is still queued or sending with no wamid
        (its send's answer was lost, or is not written yet); whether it was.
        The sender's own outcome of the send changes it no more."""
        raise NotImplementedError(f"{type(self).__name__}: adopt_status")

    async def give_back(
        self,
        item_id: int,
        attempt: int,
        error: str,
        retry_at: datetime | None = None,
    ) -> None:
        """Queue a taken item again, its take not counted: the request never
        left (the sender stopped first, or no connection was made). Due
        again at `retry_at`, or now. Nothing if another take has it."""
        raise NotImplementedError(f"{type(self).__name__}: give_back")

    async def renew_lease(self, item_id: int, attempt: int) -> bool:
        """Whether the item is still `sending` under this take, its lease
        started again if so.

        `attempt` is the item's attempt number as `due_outbox` returned it:
        once the lease ran out and the item was queued or taken again, the
        old take must not send it (the sender asks before a late send).
        """
        raise NotImplementedError(f"{type(self).__name__}: renew_lease")

    async def attempts_of(self, item_id: int) -> list[dict[str, Any]]:
        """Return the attempts log of an item, oldest first."""
        raise NotImplementedError(f"{type(self).__name__}: attempts_of")

    async def last_inbound(self, wa_ids: Sequence[str]) -> dict[str, datetime]:
        """Return when each phone last wrote (opens the 24-hour window): its
        conversation's last message that opens it, or a message stored and
        not handled yet (a send right after a driver's first message saw the
        window closed, and went as a template)."""
        raise NotImplementedError(f"{type(self).__name__}: last_inbound")

    async def outbox_by_wamid(self, wamid: str) -> OutboxItem | None:
        """Return the outbound item Meta knows by this wamid, if any."""
        raise NotImplementedError(f"{type(self).__name__}: outbox_by_wamid")

    async def outbox_with_replacement(self, item_id: int) -> list[OutboxItem]:
        """The item of this id and, if a template went in its place, that
        template's item after it; none if there is no such id."""
        raise NotImplementedError(f"{type(self).__name__}: outbox_with_replacement")

    async def add_fallback(self, item_id: int, *, replace: bool) -> OutboxItem | None:
        """Queue an item's template fallback, once per item.

        With `replace` the item never reached Meta: it becomes `replaced`
        and the template is returned already taken (`sending`), to go out
        in its place. Without, the item failed at Meta and the template is
        queued. Returns None if the item has no fallback or already used it.
        """
        raise NotImplementedError(f"{type(self).__name__}: add_fallback")

    async def history(
        self, wa_id: str, limit: int, offset: int
    ) -> tuple[int, list[HistoryEntry]]:
        """Return a phone's message count and one page of it, newest first."""
        raise NotImplementedError(f"{type(self).__name__}: history")

    async def delivery_counts(self, start: datetime, end: datetime) -> DeliveryCounts:
        """Count outbound messages created in [start, end) by status."""
        raise NotImplementedError(f"{type(self).__name__}: delivery_counts")

    async def queue_stats(self) -> QueueStats:
        """Return the inbox and outbox depths."""
        raise NotImplementedError(f"{type(self).__name__}: queue_stats")

    # Account links (issue 4). Not abstract, like the delivery methods.

    async def get_link(self, wa_id: str) -> Link | None:
        """Return the driver account a phone is linked to, if any."""
        raise NotImplementedError(f"{type(self).__name__}: get_link")

    async def link_of_driver(self, driver_id: str) -> Link | None:
        """Return the link of a driver account, whatever phone holds it."""
        raise NotImplementedError(f"{type(self).__name__}: link_of_driver")

    async def save_link(self, link: Link) -> None:
        """Link a phone to a driver, replacing that phone's previous link."""
        raise NotImplementedError(f"{type(self).__name__}: save_link")

    async def move_link(self, old_wa_id: str, new_wa_id: str) -> bool:
        """Move a link to a phone's new number; False if it had none."""
        raise NotImplementedError(f"{type(self).__name__}: move_link")

    async def prune(self, before: datetime) -> dict[str, int]:
        """Delete what is finished and older than `before`: handled inbox
        events, outbox items no sender will touch again (with their
        attempts), linking attempts and kept API answers. Never a pending
        event, a queued or sending message, a conversation or a link.

        Runs in batches of `PRUNE_BATCH` rows, each its own transaction.
        Returns the rows deleted per table.
        """
        deleted = {}
        for table, key, condition, column in pruned_tables():
            deleted[table] = 0
            while True:
                done = await self._prune_batch(table, key, condition, column, before)
                deleted[table] += done
                if done < PRUNE_BATCH:
                    break
        return deleted

    async def _prune_batch(
        self, table: str, key: str, condition: str, column: str, before: datetime
    ) -> int:
        """Delete up to `PRUNE_BATCH` rows of `table` (and an outbox item's
        attempts) in one transaction; how many went. The names come from
        `PRUNED`, never from user input."""
        raise NotImplementedError(f"{type(self).__name__}: prune")

    async def remove_link(self, wa_id: str) -> bool:
        """Unlink a phone from its driver account; False if it had none."""
        raise NotImplementedError(f"{type(self).__name__}: remove_link")

    async def move_conversation(self, old_wa_id: str, new_wa_id: str) -> bool:
        """Move a conversation to a phone's new number; False if there was
        none, or the new number is in a flow of its own already."""
        raise NotImplementedError(f"{type(self).__name__}: move_conversation")

    async def add_link_attempt(self, wa_id: str, rut: str, outcome: str) -> None:
        """Record one linking attempt (`ok`, `invalid`, `unknown`, `denied`…)."""
        raise NotImplementedError(f"{type(self).__name__}: add_link_attempt")

    async def failed_link_attempts(self, wa_id: str, since: datetime) -> int:
        """Count a phone's attempts since a time that count against the
        hourly limit: every outcome but `ok` and `denied` (bot/business/links.py
        says why)."""
        raise NotImplementedError(f"{type(self).__name__}: failed_link_attempts")

    async def inbound_count(self, start: datetime, end: datetime) -> int:
        """Count user messages received in [start, end)."""
        raise NotImplementedError(f"{type(self).__name__}: inbound_count")
