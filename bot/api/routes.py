"""The handlers of the backend API (`/api/whatsapp/…`).

A send or notify call validates its body against the OpenAPI schema,
normalises the phone to E.164, queues the message in the outbox (with its
template fallback), wakes the sender and answers 202 with the queued ids at
once: it never waits for Meta. History and metrics read the message log.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
from aiohttp import web

from bot.api.auth import Authenticator, error
from bot.api.notifications import Notifier, WindowClosed
from bot.api.openapi import PREFIX, SCHEMAS, document
from bot.api.phones import InvalidPhone, Phone, normalize_phone
from bot.api.settings import ApiSettings
from bot.api.views import history_entry, link_view, message_view, metrics
from bot.engine.text import visible
from bot.errors import RenderError
from bot.logs import mask
from bot.whatsapp.limits import LimitError
from bot.whatsapp.messages import template_body
from bot.whatsapp.templates import window_open
from storage.base import KeptAnswer, Keyed, NewOutbound, Store, utcnow
from storage.errors import KeyInUse, StorageError

log = logging.getLogger("tracbot.api")

METRICS_DEFAULT_DAYS = 30

# The header of a call that may be made again without queueing twice, the
# longest key it takes, and where a keyed call's key and fingerprint wait.
IDEMPOTENCY_KEY = "Idempotency-Key"
MAX_KEY = 255
KEYED: ContextVar[tuple[str, str] | None] = ContextVar("keyed", default=None)

Handler = Callable[[web.Request], Awaitable[web.Response]]

# What a 503 of the API asks the backend to wait before trying again.
RETRY_AFTER_SECONDS = 5

JSON = "application/json"

# The longest value an error answer quotes back.
SHOWN = 40

# The largest integer a query may give (a 64-bit one).
LARGEST = 2**63 - 1
# The years a date of a query may have.
FIRST_YEAR, LAST_YEAR = 1970, 9998

_VALIDATORS = {
    name: jsonschema.Draft202012Validator(schema) for name, schema in SCHEMAS.items()
}


class BackendApi:
    """The routes of the backend API; see the module docstring."""

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        settings: ApiSettings,
        wake_sender: Callable[[], None],
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.settings = settings
        self.wake_sender = wake_sender
        self.auth = Authenticator(settings.tokens)

    def routes(self) -> list[web.RouteDef]:
        def sending(handler: Handler) -> Handler:
            return _storage_guarded(self._keyed(handler))

        guarded = _storage_guarded
        return [
            web.post(f"{PREFIX}/send_text", sending(self.send_text)),
            web.post(f"{PREFIX}/send_template", sending(self.send_template)),
            web.post(f"{PREFIX}/notify/trip_status", sending(self.trip_status)),
            web.post(f"{PREFIX}/notify/guide_created", sending(self.guide_created)),
            web.post(f"{PREFIX}/alert", sending(self.alert)),
            web.get(f"{PREFIX}/messages/{{id}}", guarded(self.message)),
            web.get(f"{PREFIX}/links/{{phone}}", guarded(self.link)),
            web.delete(f"{PREFIX}/links/{{phone}}", guarded(self.unlink)),
            web.get(f"{PREFIX}/history/{{phone}}", guarded(self.history)),
            web.get(f"{PREFIX}/metrics", guarded(self.metrics)),
            web.get(f"{PREFIX}/openapi.json", self.openapi),
        ]

    # Sending

    def _keyed(self, handler: Handler) -> Handler:
        """The handler, answering a call made again with its Idempotency-Key
        as it answered it the first time, without queueing anything.

        A backend that timed out, or got a 503 while the database was slow
        to answer, cannot know whether its call was queued: sent again with
        the same key, it is queued once. The key is kept with the call's
        messages, in their transaction; a call that failed kept nothing and
        may be made again as new.
        """

        @functools.wraps(handler)
        async def keyed(request: web.Request) -> web.Response:
            keys = request.headers.getall(IDEMPOTENCY_KEY, [])
            if not keys:
                return await handler(request)
            # Before anything is read: a kept answer is its token's only.
            token = self.auth.require(request, "backend")
            key = keys[0]
            if len(keys) > 1:
                raise error(400, f"one {IDEMPOTENCY_KEY} header, not {len(keys)}")
            if not (0 < len(key) <= MAX_KEY and key.isascii() and key.isprintable()):
                raise error(
                    400,
                    f"{IDEMPOTENCY_KEY} must be 1 to {MAX_KEY} printable ASCII "
                    "characters",
                )
            # The same bytes to the same path with the same token: a key
            # another token used names another call.
            call = f"{token.env} {request.method} {request.path}\n"
            digest = hashlib.sha256(call.encode())
            digest.update(await request.read())
            fingerprint = digest.hexdigest()

            kept = await self.store.kept_answer(key)
            if kept is None:
                outer = KEYED.set((key, fingerprint))
                try:
                    return await handler(request)
                except KeyInUse:
                    # The same call, made twice at once: the other was kept.
                    kept = await self.store.kept_answer(key)
                    if kept is None:
                        raise
                finally:
                    KEYED.reset(outer)
            return _replayed(kept, fingerprint)

        return keyed

    async def send_text(self, request: web.Request) -> web.Response:
        data, phone = await self._body(request, "SendText")
        # The window is decided once for the whole text, so its parts all
        # go the same way (see the OpenAPI description).
        last = (await self.store.last_inbound([phone.wa_id])).get(phone.wa_id)
        try:
            items = self.notifier.text(
                phone.wa_id,
                data["message"],
                window_open=window_open(last, utcnow()),
                preview_url=data.get("preview_url", False),
            )
        except WindowClosed as exc:
            raise error(409, str(exc)) from None
        return await self._queued(phone, items, "text")

    async def send_template(self, request: web.Request) -> web.Response:
        data, phone = await self._body(request, "SendTemplate")
        name, language = data["template_name"], data.get("language", "es")
        parameters = data.get("parameters", [])
        self._check_declared(name, language, len(parameters))
        try:
            body = template_body(phone.wa_id, name, language, parameters)
        except LimitError as exc:
            raise error(400, str(exc)) from None
        item = NewOutbound(phone.wa_id, self.notifier.phone_number_id, "message", body)
        return await self._queued(phone, [item], "template")

    def _check_declared(self, name: str, language: str, given: int) -> None:
        """Refuse a parameter count that a configured template cannot take.

        Meta refuses it only after the 202 (132000, the message failed);
        a template that `templates:` does not declare is taken as given.
        """
        for spec in self.notifier.templates.values():
            if spec.name != name or spec.language != language:
                continue
            if given != len(spec.parameters):
                raise error(
                    400,
                    f"template {name!r} ({language}) takes "
                    f"{len(spec.parameters)} parameter"
                    f"{'' if len(spec.parameters) == 1 else 's'} "
                    f"({', '.join(spec.parameters)}; templates.{spec.key} in "
                    f"the config), got {given}",
                )
            return

    async def trip_status(self, request: web.Request) -> web.Response:
        data, phone = await self._body(request, "TripStatus")
        await self._reachable(phone, "trip_status")
        items = self._render(self.notifier.trip_status, phone, data)
        return await self._queued(phone, items, "trip_status")

    async def guide_created(self, request: web.Request) -> web.Response:
        data, phone = await self._body(request, "GuideCreated")
        await self._reachable(phone, "guide_created")
        items = self._render(self.notifier.guide_created, phone, data)
        return await self._queued(phone, items, "guide_created")

    async def _reachable(self, phone: Phone, kind: str) -> None:
        """Refuse a notification that nothing configured can deliver."""
        unreachable = await self._unreachable([phone], kind)
        if unreachable:
            raise error(409, unreachable[phone.e164])

    async def _unreachable(self, phones: list[Phone], kind: str) -> dict[str, str]:
        """The phones a notification of `kind` cannot reach, and why.

        With the 24-hour window closed only a template reaches the phone:
        without `templates.<kind>` the text was queued (202) and Meta
        refused it, as send_text answers at once (409).
        """
        if kind in self.notifier.templates or not phones:
            return {}
        last = await self.store.last_inbound([phone.wa_id for phone in phones])
        now = utcnow()
        why = (
            f"the phone's 24-hour window is closed and no templates.{kind} "
            "template is configured to carry this notification"
        )
        return {
            phone.e164: why
            for phone in phones
            if not window_open(last.get(phone.wa_id), now)
        }

    async def alert(self, request: web.Request) -> web.Response:
        self.auth.require(request, "backend")
        data = await self._json(request, "Alert")
        data.setdefault("severidad", "medium")
        values = {k: v for k, v in data.items() if k != "phones"}

        # One bad number must not keep an alert from the other admins, and
        # a number written twice (maybe two ways) gets the alert once.
        now, results = utcnow(), []
        phones: dict[str, Phone] = {}
        for raw in data["phones"]:
            try:
                phone = normalize_phone(raw, self.settings.default_region)
            except InvalidPhone as exc:
                given = raw[:SHOWN] if isinstance(raw, str) else _shown(raw)
                results.append({"phone": given, "status": "invalid", "error": str(exc)})
                continue
            status = "duplicate" if phone.e164 in phones else "queued"
            phones.setdefault(phone.e164, phone)
            results.append({"phone": phone.e164, "status": status})

        unreachable = await self._unreachable(list(phones.values()), "alert")
        items = {
            e164: _rendered(self.notifier.alert, phone.wa_id, values, now)
            for e164, phone in phones.items()
            if e164 not in unreachable
        }
        if not items:
            if unreachable:
                raise error(409, next(iter(unreachable.values())))
            raise error(400, "no valid phone number in phones")

        def answer(ids: list[int]) -> dict[str, Any]:
            queued = _split(ids, items)
            shown = []
            for result in results:
                phone, valid = result["phone"], result["status"] != "invalid"
                if valid and phone in unreachable:
                    result = {**result, "status": "unreachable"}
                    result["error"] = unreachable[phone]
                elif valid:
                    result = {**result, "message_ids": queued[phone]}
                shown.append(result)
            return {"results": shown}

        # One transaction for every admin: a 503 half way had queued the
        # alert for some, and the backend's retry sent it to them twice.
        flat = [item for group in items.values() for item in group]
        body = await self._enqueue(flat, answer)
        log.info("api queued kind=alert phones=%d", len(items))
        return web.json_response(body, status=202)

    # Reading

    async def message(self, request: web.Request) -> web.Response:
        """Where a message a send call queued stands, found by the id it
        answered: a notice sent as its template instead (the window was
        closed) shows that template's progress too."""
        self.auth.require(request, "backend")
        raw = request.match_info["id"]
        item_id = int(raw) if raw.isascii() and raw.isdigit() else 0
        if not 0 < item_id <= LARGEST:
            raise error(400, f"id must be a message id, got {_shown(raw)}")
        items = await self.store.outbox_with_replacement(item_id)
        if not items or items[0].id != item_id:
            raise error(404, f"no message with id {item_id}")
        return web.json_response(message_view(*items))

    # Account links

    async def link(self, request: web.Request) -> web.Response:
        self.auth.require(request, "backend")
        phone = self._phone(request.match_info["phone"])
        found = await self.store.get_link(phone.wa_id)
        return web.json_response(link_view(phone.e164, found))

    async def unlink(self, request: web.Request) -> web.Response:
        """A driver who left: the number no longer acts for the account.

        A number the business data still has on file links again by itself
        at its next message (bot/business/links.py): the account's phone
        goes from there too.
        """
        self.auth.require(request, "backend")
        phone = self._phone(request.match_info["phone"])
        removed = await self.store.remove_link(phone.wa_id)
        log.info("api unlinked phone=%s removed=%s", mask(phone.wa_id), removed)
        return web.json_response({"phone": phone.e164, "unlinked": removed})

    async def history(self, request: web.Request) -> web.Response:
        self.auth.require(request, "admin")
        phone = self._phone(request.match_info["phone"])
        limit = _int_query(request, "limit", 50, 1, self.settings.max_page)
        offset = _int_query(request, "offset", 0, 0, None)
        total, entries = await self.store.history(phone.wa_id, limit, offset)
        return web.json_response(
            {
                "phone": phone.e164,
                "total": total,
                "limit": limit,
                "offset": offset,
                "messages": [history_entry(entry) for entry in entries],
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        self.auth.require(request, "admin")
        end = _date_query(request, "end_date") or utcnow()
        start = _date_query(request, "start_date") or end - timedelta(
            days=METRICS_DEFAULT_DAYS
        )
        if start >= end:
            raise error(400, "start_date must be before end_date")
        counts = await self.store.delivery_counts(start, end)
        return web.json_response(metrics(counts, start, end))

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(document())

    # Helpers

    async def _body(self, request: web.Request, schema: str) -> tuple[dict, Phone]:
        self.auth.require(request, "backend")
        data = await self._json(request, schema)
        return data, self._phone(data["phone"])

    async def _json(self, request: web.Request, schema: str) -> dict[str, Any]:
        try:
            data = json.loads(await request.read())
        except (ValueError, RecursionError):
            raise error(400, "the body must be a JSON object") from None
        try:
            # JSON lets a lone UTF-16 surrogate (`"\\ud800"`) through; no
            # text has one, and storing it failed with a 500.
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise error(
                400,
                "the body has a lone UTF-16 surrogate (\\ud800-\\udfff), "
                "which is not text",
            ) from None
        problem = jsonschema.exceptions.best_match(
            _VALIDATORS[schema].iter_errors(data)
        )
        if problem is not None:
            where = ".".join(str(part) for part in problem.absolute_path)
            raise error(400, f"{where or 'body'}: {_rule(problem)}")
        return _without_blanks(data, SCHEMAS[schema])

    def _phone(self, raw: object) -> Phone:
        try:
            return normalize_phone(raw, self.settings.default_region)
        except InvalidPhone as exc:
            raise error(400, str(exc)) from None

    def _render(
        self,
        notify: Callable[[str, dict[str, Any]], list[NewOutbound]],
        phone: Phone,
        data: dict[str, Any],
    ) -> list[NewOutbound]:
        values = {k: v for k, v in data.items() if k != "phone"}
        return _rendered(notify, phone.wa_id, values)

    async def _queued(
        self, phone: Phone, items: list[NewOutbound], kind: str
    ) -> web.Response:
        def answer(ids: list[int]) -> dict[str, Any]:
            return {"status": "queued", "phone": phone.e164, "message_ids": ids}

        body = await self._enqueue(items, answer)
        ids = body["message_ids"]
        log.info("api queued kind=%s phone=%s ids=%s", kind, mask(phone.wa_id), ids)
        return web.json_response(body, status=202)

    async def _enqueue(
        self,
        items: list[NewOutbound],
        answer: Callable[[list[int]], dict[str, Any]],
    ) -> dict[str, Any]:
        """Queue a call's messages and return its answer; a call made with
        an Idempotency-Key (`_keyed`) keeps that answer in the same
        transaction."""
        keyed = None
        if (call := KEYED.get()) is not None:
            key, fingerprint = call
            keyed = Keyed(key, fingerprint, lambda ids: json.dumps(answer(ids)))
        ids = await self.store.enqueue(items, keyed)
        self.wake_sender()
        return answer(ids)


def _without_blanks(data: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The body with its blank texts: refused where required, dropped (as
    absent) where optional.

    A text of spaces, a zero-width space or a control character reached
    the driver as an empty message, or as "📄 Folio:  / 👤 Cliente: ".
    """
    required = set(schema.get("required", ()))
    kept = {}
    for name, value in data.items():
        if isinstance(value, str) and not visible(value):
            if name in required:
                raise error(
                    400, f"{name} has no text, only spaces or invisible characters"
                )
            continue
        kept[name] = value
    return kept


def _rendered(
    notify: Callable[..., list[NewOutbound]], *args: Any
) -> list[NewOutbound]:
    """A notification's items; a template that fails is a 500 saying so."""
    try:
        return notify(*args)
    except RenderError as exc:
        log.error("notification template failed: %s", exc)
        raise error(500, "the notification template failed; see the log") from None


def _replayed(kept: KeptAnswer, fingerprint: str) -> web.Response:
    if kept.fingerprint != fingerprint:
        raise error(
            422,
            f"this {IDEMPOTENCY_KEY} was used for another call (another path, "
            "token or body): a new call needs a new key",
        )
    return web.Response(
        text=kept.response,
        status=202,
        content_type=JSON,
        headers={"Idempotent-Replayed": "true"},
    )


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type (`null`, not `NoneType`)."""
    for kind, name in ((bool, "boolean"), (int | float, "number"), (str, "string")):
        if isinstance(value, kind):
            return name
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"


def _split(ids: list[int], items: dict[str, list[NewOutbound]]) -> dict[str, list[int]]:
    """The ids of one enqueue of every group's items, group by group."""
    split, start = {}, 0
    for key, group in items.items():
        split[key] = ids[start : start + len(group)]
        start += len(group)
    return split


def _rule(problem: jsonschema.ValidationError) -> str:
    """The broken rule in words; a value is quoted only when short."""
    rule, value, instance = problem.validator, problem.validator_value, problem.instance
    size = len(instance) if isinstance(instance, str | list) else None
    if rule == "maxLength":
        return f"must be at most {value} characters, got {size}"
    if rule == "minLength":
        return f"must be at least {value} characters, got {size}"
    if rule == "maxItems":
        return f"must have at most {value} items, got {size}"
    if rule == "minItems":
        return f"must have at least {value} items, got {size}"
    if rule == "type":
        return f"must be of type {value}, got {_json_type(instance)}"
    if rule == "enum":
        return f"must be one of {', '.join(map(str, value))}, got {_shown(instance)}"
    if rule == "pattern":
        return f"must match {value}, got {_shown(instance)}"
    if rule == "required":
        missing = [name for name in value if name not in (instance or {})]
        return f"missing required field {', '.join(missing)}"
    if rule == "additionalProperties":
        extra = sorted(set(instance) - set(problem.schema.get("properties", {})))
        return f"unknown field {', '.join(_shown(name) for name in extra)}"
    return f"breaks the {rule} rule"


def _shown(value: object) -> str:
    """A value for an error message, cut so an answer never echoes a lot."""
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


def _int_query(
    request: web.Request, name: str, default: int, low: int, high: int | None
) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise error(400, f"{name} must be an integer, got {_shown(raw)}") from None
    # No store counts past a 64-bit integer (it answered 500).
    high = LARGEST if high is None else high
    if value < low or value > high:
        raise error(400, f"{name} must be from {low} to {high}, got {_shown(value)}")
    return value


def _date_query(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        # `+03:00` unencoded in a URL arrives as ` 03:00`.
        hint = " (a + in a URL reads as a space: write it %2B)" if " " in raw else ""
        raise error(
            400, f"{name} must be an ISO 8601 date, got {_shown(raw)}{hint}"
        ) from None
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        # The year 1 or 9999 overflowed moving to UTC or a month back (500).
        raise error(
            400, f"{name} must be from {FIRST_YEAR} to {LAST_YEAR}, got {_shown(raw)}"
        )
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _storage_guarded(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The handler, answering 503 (JSON, as every other error) while the
    store is unavailable, instead of aiohttp's 500 and a traceback."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except StorageError as exc:
            # The route, not the path: /history/{phone} holds a phone number.
            route = request.match_info.route.resource
            log.error(
                "api %s %s: storage unavailable: %s",
                request.method,
                route.canonical if route is not None else "-",
                exc,
            )
            raise error(
                503,
                "storage unavailable, try again shortly",
                **{"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from None

    return guarded


@web.middleware
async def json_errors(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """aiohttp's own errors on the API's paths (an unknown path, a method
    the path lacks, a body too large) as JSON, like the API's own."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith(PREFIX) or exc.content_type == JSON:
            raise
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        message = (exc.text or exc.reason).removeprefix(f"{exc.status}: ")
        return web.json_response({"error": message}, status=exc.status, headers=allow)
