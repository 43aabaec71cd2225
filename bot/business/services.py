"""The services flows reach through `turn.services`: business data, the
store, and the accounts of drivers; opened and closed with the app."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.business.fixture import ensure_built
from bot.business.links import Accounts, Identity
from bot.business.queries import BusinessData, create_driver
from bot.business.settings import BusinessSettings
from storage.base import Store

log = logging.getLogger("tracbot.business")


@dataclass
class Services:
    """What Tracmin's conditions and actions use; see the module docstring."""

    store: Store
    business: BusinessData
    accounts: Accounts
    settings: BusinessSettings

    @classmethod
    def create(cls, settings: BusinessSettings, store: Store) -> Services:
        """Build the services of a deployment; nothing is opened yet."""
        business = BusinessData(
            create_driver(settings.url), settings.queries, settings.timeout_seconds
        )
        accounts = Accounts(
            store,
            business,
            settings.admins,
            settings.link_attempts_per_hour,
            recheck_seconds=settings.phone_recheck_seconds,
        )
        return cls(store, business, accounts, settings)

    async def open(self) -> None:
        """Build the demo database if it is missing, then connect."""
        path = self.settings.sqlite_path
        if path is not None and self.settings.fixture is not None:
            ensure_built(self.settings.fixture, path)
        await self.business.open()

    async def close(self) -> None:
        await self.business.close()

    async def identify(self, wa_id: str) -> Identity:
        """Who a phone is (the router asks once per message)."""
        return await self.accounts.identify(wa_id)

    async def number_changed(self, old_wa_id: str, new_wa_id: str) -> bool:
        """A driver's WhatsApp number changed: their link and their
        conversation follow (INDEX.md, `system_number_changed`); return
        whether a conversation moved."""
        await self.accounts.number_changed(old_wa_id, new_wa_id)
        return await self.store.move_conversation(old_wa_id, new_wa_id)
