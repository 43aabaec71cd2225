"""The texts of Tracmin's notifications, and the templates behind them.

Each notification is rendered from `message_templates/` (the seed's texts,
emoji included) and queued as a free-form text that carries its approved
template as fallback, for when the driver's 24-hour window is closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.engine.outbound import text_messages
from bot.engine.replies import Renderer
from bot.engine.text import normalize
from bot.errors import TracbotError
from bot.whatsapp.messages import text_bodies
from bot.whatsapp.templates import TemplateSpec, template_parts
from storage.base import NewOutbound

TRIP_EMOJI = {
    "inicio jornada": "🚀",
    "en carga": "⏳",
    "con folio": "📄",
    "en transito": "🚛",
    "llegada cliente": "📍",
    "fin entrega": "✅",
    "cancelado": "❌",
}
TRIP_DEFAULT_EMOJI = "📢"

SEVERITY_EMOJI = {
    "low": "ℹ️",
    "medium": "⚠️",
    "high": "🚨",
    "critical": "🔴",
}


# What each notification template is given: the API's fields, and what the
# notifier adds. `tracbot check` holds the templates to it.
TEMPLATE_VALUES = {
    "notificacion_viaje": frozenset({"patente", "estado", "ubicacion", "emoji"}),
    "notificacion_guia": frozenset({"folio", "cliente", "conductor"}),
    "alerta_sistema": frozenset(
        {"tipo_alerta", "descripcion", "severidad", "emoji", "hora"}
    ),
}


# The values a call may leave out: the template gets None for them.
OPTIONAL_VALUES = {"notificacion_viaje": frozenset({"ubicacion"})}


class WindowClosed(TracbotError):
    """Nothing configured can reach a phone whose window is closed."""


@dataclass(frozen=True, slots=True)
class Notifier:
    """Turns backend requests into outbox items for one business number."""

    # The engine's templates of the moment: an edit reloaded for the flows
    # is what the next notification says too (a Renderer of its own kept
    # the text of the start).
    renderer: Callable[[], Renderer]
    templates: dict[str, TemplateSpec]
    phone_number_id: str
    timezone: str = "America/Santiago"

    def text(
        self,
        wa_id: str,
        text: str,
        *,
        window_open: bool,
        preview_url: bool = False,
    ) -> list[NewOutbound]:
        """A backend text, whole, whichever way the phone can receive it.

        With the 24-hour window open: free-form parts of up to 4096
        characters, each carrying the `text` template as fallback when it
        fits in one parameter. Closed: one `text` template per part of up
        to 1024 characters, on one line.

        Raises:
            WindowClosed: the window is closed and no `text` template is
                configured, so nothing can carry the text.
        """
        spec = self.templates.get("text")
        if window_open:
            return text_messages(
                wa_id, self.phone_number_id, [text], spec, preview_url=preview_url
            )
        if spec is None:
            raise WindowClosed(
                "the phone's 24-hour window is closed and no templates.text "
                "template is configured to carry a free-form text"
            )
        return [
            NewOutbound(
                wa_id,
                self.phone_number_id,
                "message",
                spec.body(wa_id, {spec.parameters[0]: part}),
            )
            for part in template_parts(text)
        ]

    def trip_status(self, wa_id: str, values: dict[str, Any]) -> list[NewOutbound]:
        """The seed's trip update: emoji by estado, ubicación if given."""
        emoji = TRIP_EMOJI.get(normalize(values["estado"]), TRIP_DEFAULT_EMOJI)
        text = self.renderer().render(
            "notificacion_viaje", {"ubicacion": None, **values, "emoji": emoji}
        )
        return self._items(wa_id, text, "trip_status", {**values, "emoji": emoji})

    def guide_created(self, wa_id: str, values: dict[str, Any]) -> list[NewOutbound]:
        """The seed's "guía generada" message."""
        text = self.renderer().render("notificacion_guia", values)
        return self._items(wa_id, text, "guide_created", values)

    def alert(
        self, wa_id: str, values: dict[str, Any], now: datetime
    ) -> list[NewOutbound]:
        """The seed's system alert, its time written in the local zone."""
        hora = now.astimezone(ZoneInfo(self.timezone)).strftime("%d/%m/%Y %H:%M:%S")
        context = {
            **values,
            "emoji": SEVERITY_EMOJI[values["severidad"]],
            "hora": hora,
        }
        text = self.renderer().render("alerta_sistema", context)
        # The template gets the severity's emoji too: without it a critical
        # alert read like any other once the admin's window had closed.
        fallback = {"tipo": values["tipo_alerta"], "hora": hora, **context}
        return self._items(wa_id, text, "alert", fallback)

    def _items(
        self,
        wa_id: str,
        text: str,
        template: str | None,
        values: dict[str, Any],
        preview_url: bool = False,
    ) -> list[NewOutbound]:
        spec = self.templates.get(template) if template else None
        fallback = spec.body(wa_id, values) if spec else None

        # Only the first part carries the template: the window is the same
        # for every part, and one template says enough.
        items = []
        for index, body in enumerate(text_bodies(wa_id, text, preview_url=preview_url)):
            items.append(
                NewOutbound(
                    wa_id,
                    self.phone_number_id,
                    "message",
                    body,
                    fallback=fallback if index == 0 else None,
                )
            )
        return items
