"""Bearer tokens and roles of the backend API.

No token, or one we do not know, is a 401 (with `WWW-Authenticate`); a
known token without the role the endpoint needs is a 403. Tokens are
compared in constant time and never logged: a log line names the
environment variable the token came from.
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from bot.api.settings import ApiToken

log = logging.getLogger("tracbot.api")


def error(status: int, message: str, **headers: str) -> web.HTTPException:
    """A JSON error answer `{"error": message}` to raise from a handler."""
    cls = web.HTTPException
    for candidate in (
        web.HTTPBadRequest,
        web.HTTPUnauthorized,
        web.HTTPForbidden,
        web.HTTPNotFound,
        web.HTTPConflict,
        web.HTTPUnprocessableEntity,
        web.HTTPServiceUnavailable,
        web.HTTPInternalServerError,
    ):
        if candidate.status_code == status:
            cls = candidate
    return cls(
        text=web.json_response({"error": message}).text,
        content_type="application/json",
        headers=headers or None,
    )


class Authenticator:
    """Checks the bearer token of a request against the configured ones."""

    def __init__(self, tokens: tuple[ApiToken, ...]) -> None:
        self.tokens = tokens

    def require(self, request: web.Request, role: str) -> ApiToken:
        """Return the request's token, or raise the 401 or 403 answer."""
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise error(401, "bearer token required", **{"WWW-Authenticate": "Bearer"})

        token = self._find(presented.strip())
        if token is None:
            log.warning("api call refused: unknown token path=%s", _route(request))
            raise error(401, "unknown bearer token", **{"WWW-Authenticate": "Bearer"})
        if role not in token.roles:
            log.warning(
                "api call refused: token=%s lacks role=%s path=%s",
                token.env,
                role,
                _route(request),
            )
            raise error(403, f"this token lacks the {role!r} role")
        return token

    def _find(self, presented: str) -> ApiToken | None:
        # Every token is compared, so timing does not reveal which matched.
        found = None
        for token in self.tokens:
            if hmac.compare_digest(token.token.encode(), presented.encode()):
                found = token
        return found


def _route(request: web.Request) -> str:
    # The route's pattern, not the path: a path may hold a phone number.
    info = request.match_info.route.resource
    return info.canonical if info is not None else "-"
