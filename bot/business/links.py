"""Who a phone number is: unlinked, a linked driver, or an administrator.

A phone is linked to a driver account when the driver confirmed their RUT
(`link`), or when the business data has that phone on file for a driver
(`driver_by_phone`, if the deployment configures it). Administrators are
the numbers listed in `business.admins` or drivers whose business role is
`admin`. Wrong linking attempts are recorded and limited per hour.

An unlinked phone would cost a `driver_by_phone` query on every message it
sends, against the deployment's own database. A phone found not on file is
therefore believed not on file for `recheck_seconds` (config
`business.phone_recheck_seconds`): a number the office adds is recognised
within that time, and the driver can always link with the RUT meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta

from bot.business.queries import BusinessData, Row
from bot.logs import mask
from storage.base import Link, Store, utcnow

log = logging.getLogger("tracbot.business")

UNLINKED = "unlinked"
DRIVER = "driver"
ADMIN = "admin"

# Outcomes of a linking attempt, as recorded. All but OK and DENIED count
# against the hourly limit: FOUND is a RUT whose driver's name was shown,
# which counts whatever follows (a "no", CANCELAR, silence), so that names
# cannot be looked up without limit; the "no" after it (DENIED) is only
# written down.
OK = "ok"
INVALID = "invalid"
UNKNOWN = "unknown"
FOUND = "found"
DENIED = "denied"
TAKEN = "taken"

# Phones remembered as not on file, at most; the oldest are forgotten first.
NOT_ON_FILE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Identity:
    """A phone number as the router sees it."""

    wa_id: str
    role: str
    link: Link | None = None

    @property
    def linked(self) -> bool:
        return self.link is not None

    @property
    def driver_id(self) -> str | None:
        return self.link.driver_id if self.link else None


class Accounts:
    """Links between phones and driver accounts; see the module docstring."""

    def __init__(
        self,
        store: Store,
        business: BusinessData,
        admins: frozenset[str] = frozenset(),
        attempts_per_hour: int = 3,
        recheck_seconds: float = 60.0,
    ) -> None:
        self.store = store
        self.business = business
        self.admins = admins
        self.attempts_per_hour = attempts_per_hour
        self.recheck_seconds = recheck_seconds
        # wa_id -> monotonic time until which it is believed not on file.
        self._not_on_file: OrderedDict[str, float] = OrderedDict()

    async def identify(self, wa_id: str) -> Identity:
        """Return who a phone is, linking it by its number if on file."""
        link = await self.store.get_link(wa_id)
        if link is None:
            link = await self._link_by_phone(wa_id)

        if wa_id in self.admins or (link is not None and link.role == ADMIN):
            role = ADMIN
        else:
            role = DRIVER if link is not None else UNLINKED
        return Identity(wa_id, role, link)

    async def _link_by_phone(self, wa_id: str) -> Link | None:
        if not self.business.has("driver_by_phone") or self._known_absent(wa_id):
            return None
        row = await self.business.row("driver_by_phone", phone=wa_id)
        if row is None:
            self._remember_absent(wa_id)
            return None
        if await self.store.link_of_driver(str(row["id"])) is not None:
            # The driver linked another number with their RUT; that link wins.
            return None
        link = _link(wa_id, row, "phone")
        await self.store.save_link(link)
        log.info("phone linked by number on file phone=%s", mask(wa_id))
        return link

    def _known_absent(self, wa_id: str) -> bool:
        until = self._not_on_file.get(wa_id)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._not_on_file[wa_id]
        return False

    def _remember_absent(self, wa_id: str) -> None:
        if self.recheck_seconds <= 0:
            return
        self._not_on_file[wa_id] = time.monotonic() + self.recheck_seconds
        self._not_on_file.move_to_end(wa_id)
        if len(self._not_on_file) > NOT_ON_FILE_MAX:
            self._not_on_file.popitem(last=False)

    async def driver_by_rut(self, rut: str) -> Row | None:
        """Look a canonical RUT (`12345678-5`) up in the business data."""
        body, check_digit = rut.split("-")
        return await self.business.row(
            "driver_by_rut", rut=rut, rut_body=body, rut_dv=check_digit
        )

    async def blocked(self, wa_id: str) -> bool:
        """Whether a phone used up its wrong attempts of the last hour."""
        since = utcnow() - timedelta(hours=1)
        wrong = await self.store.failed_link_attempts(wa_id, since)
        return wrong >= self.attempts_per_hour

    async def record(self, wa_id: str, rut: str, outcome: str) -> None:
        """Record one linking attempt and its outcome."""
        await self.store.add_link_attempt(wa_id, rut, outcome)
        log.info("link attempt phone=%s outcome=%s", mask(wa_id), outcome)

    async def link(self, wa_id: str, driver: Row) -> bool:
        """Link a phone to a driver the driver confirmed; False if the
        account is already linked to another number."""
        current = await self.store.link_of_driver(str(driver["id"]))
        if current is not None and current.wa_id != wa_id:
            return False
        await self.store.save_link(_link(wa_id, driver, "rut"))
        return True

    async def number_changed(self, old_wa_id: str, new_wa_id: str) -> bool:
        """Move a link to the number a driver changed to."""
        # A driver known by the phone on file has no stored link until they
        # first write; make it now, so that it can move.
        await self.identify(old_wa_id)
        moved = await self.store.move_link(old_wa_id, new_wa_id)
        log.info(
            "number changed old=%s new=%s link_moved=%s",
            mask(old_wa_id),
            mask(new_wa_id),
            moved,
        )
        return moved


def _link(wa_id: str, row: Row, method: str) -> Link:
    role = ADMIN if str(row.get("role") or "").lower() == ADMIN else DRIVER
    return Link(
        wa_id=wa_id,
        driver_id=str(row["id"]),
        rut=str(row.get("rut") or ""),
        name=str(row.get("name") or ""),
        role=role,
        method=method,
        linked_at=utcnow(),
    )
