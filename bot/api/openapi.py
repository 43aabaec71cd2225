"""The OpenAPI document of the backend API, served at /api/whatsapp/openapi.json.

The request schemas here are also what the handlers validate bodies with,
so the document cannot drift from what the server accepts; a test walks
the running server against the rest of it (paths, methods, responses).
"""

from __future__ import annotations

from typing import Any

PREFIX = "/api/whatsapp"

PHONE = {
    "type": "string",
    "minLength": 1,
    "maxLength": 32,
    "description": "E.164 (+56912345678) or a national number of the default "
    "region (9 1234 5678)",
    "examples": ["+56912345678"],
}
TEXT = {"type": "string", "minLength": 1, "maxLength": 1024}

SCHEMAS: dict[str, dict[str, Any]] = {
    "SendText": {
        "type": "object",
        "required": ["phone", "message"],
        "additionalProperties": False,
        "properties": {
            "phone": PHONE,
            "message": {"type": "string", "minLength": 1, "maxLength": 16384},
            "preview_url": {"type": "boolean", "default": False},
        },
    },
    "SendTemplate": {
        "type": "object",
        "required": ["phone", "template_name"],
        "additionalProperties": False,
        "properties": {
            "phone": PHONE,
            "template_name": {"type": "string", "pattern": "^[a-z0-9_]{1,512}$"},
            "language": {
                "type": "string",
                "pattern": "^[a-z]{2,3}(_[A-Z]{2})?$",
                "default": "es",
            },
            "parameters": {
                "type": "array",
                "items": TEXT,
                "maxItems": 20,
                "description": "The body's {{1}}, {{2}}, … in order; a template "
                "that the config's `templates:` declares (same name and "
                "language) must get exactly its parameters, or 400",
            },
        },
    },
    "TripStatus": {
        "type": "object",
        "required": ["phone", "patente", "estado"],
        "additionalProperties": False,
        "properties": {
            "phone": PHONE,
            "patente": {"type": "string", "minLength": 1, "maxLength": 20},
            "estado": {
                "type": "string",
                "minLength": 1,
                "maxLength": 60,
                "examples": ["En Tránsito"],
            },
            "ubicacion": {"type": ["string", "null"], "maxLength": 200},
        },
    },
    "GuideCreated": {
        "type": "object",
        "required": ["phone", "folio", "cliente", "conductor"],
        "additionalProperties": False,
        "properties": {
            "phone": PHONE,
            "folio": {"type": "string", "minLength": 1, "maxLength": 40},
            "cliente": {"type": "string", "minLength": 1, "maxLength": 200},
            "conductor": {"type": "string", "minLength": 1, "maxLength": 200},
        },
    },
    "Alert": {
        "type": "object",
        "required": ["phones", "tipo_alerta", "descripcion"],
        "additionalProperties": False,
        "properties": {
            "phones": {"type": "array", "items": PHONE, "minItems": 1, "maxItems": 50},
            "tipo_alerta": {"type": "string", "minLength": 1, "maxLength": 100},
            "descripcion": {"type": "string", "minLength": 1, "maxLength": 2000},
            "severidad": {
                "type": "string",
                "enum": ["low", "medium", "high", "critical"],
                "default": "medium",
            },
        },
    },
    "Queued": {
        "type": "object",
        "required": ["status", "phone", "message_ids"],
        "properties": {
            "status": {"const": "queued"},
            "phone": {"type": "string", "pattern": r"^\+\d{6,15}$"},
            "message_ids": {"type": "array", "items": {"type": "integer"}},
        },
    },
    "AlertResults": {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["phone", "status"],
                    "properties": {
                        "phone": {"type": "string"},
                        "status": {
                            "enum": ["queued", "duplicate", "invalid", "unreachable"]
                        },
                        "message_ids": {"type": "array", "items": {"type": "integer"}},
                        "error": {"type": "string"},
                    },
                },
            }
        },
    },
    "Progress": {
        "type": "object",
        "required": ["id", "status", "message_id"],
        "properties": {
            "id": {"type": "integer"},
            "status": {
                "type": "string",
                "description": "As in history: queued, sending, accepted, sent, "
                "delivered, read, failed, replaced…",
            },
            "message_id": {
                "type": ["string", "null"],
                "description": "Meta's wamid, once Meta took it",
            },
            "error_code": {"type": ["integer", "null"]},
            "error": {"type": ["string", "null"]},
        },
    },
    "Message": {
        "allOf": [
            {"$ref": "#/components/schemas/Progress"},
            {
                "type": "object",
                "required": ["phone", "created_at", "replaced_by"],
                "properties": {
                    "phone": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "replaced_by": {
                        "oneOf": [
                            {"type": "null"},
                            {"$ref": "#/components/schemas/Progress"},
                        ],
                        "description": "The template that went in its place "
                        "(the window was closed), and how it stands",
                    },
                },
            },
        ]
    },
    "Link": {
        "type": "object",
        "required": ["phone", "linked"],
        "properties": {
            "phone": {"type": "string"},
            "linked": {"type": "boolean"},
            "driver_id": {"type": "string"},
            "rut": {"type": "string", "description": "12345678-5"},
            "name": {"type": "string"},
            "role": {"type": "string", "description": "driver or admin"},
            "method": {
                "type": "string",
                "description": "rut (the driver wrote it) or phone (the number "
                "was on file in the business data)",
            },
            "linked_at": {"type": "string", "format": "date-time"},
        },
    },
    "Unlinked": {
        "type": "object",
        "required": ["phone", "unlinked"],
        "properties": {
            "phone": {"type": "string"},
            "unlinked": {
                "type": "boolean",
                "description": "false: the number had no link",
            },
        },
    },
    "History": {
        "type": "object",
        "required": ["phone", "total", "limit", "offset", "messages"],
        "properties": {
            "phone": {"type": "string"},
            "total": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
            "messages": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "direction", "type", "status", "created_at"],
                    "properties": {
                        "id": {
                            "type": "integer",
                            "description": "Outgoing: the id the send call "
                            "answered in `message_ids`. Incoming: the stored "
                            "webhook event's. The two are numbered apart, so "
                            "one number may stand for an incoming and an "
                            "outgoing message: `direction` and `id` together "
                            "name a message",
                        },
                        "message_id": {
                            "type": ["string", "null"],
                            "description": "Meta's wamid, once Meta took it",
                        },
                        "direction": {"enum": ["outgoing", "incoming"]},
                        "type": {"type": "string"},
                        "content": {
                            "type": ["string", "null"],
                            "description": "The text, caption, chosen option "
                            "or coordinates; a reaction's emoji, null when a "
                            "reaction is taken back",
                        },
                        "status": {
                            "type": "string",
                            "description": "Outgoing: queued, sending, "
                            "accepted (by Meta), held_for_quality_assessment "
                            "or paused (accepted, held back by Meta), sent, "
                            "delivered, read, played, failed, or replaced (its "
                            "template went instead, as another message). "
                            "Incoming: received",
                        },
                        "error_code": {"type": ["integer", "null"]},
                        "replaces": {
                            "type": ["integer", "null"],
                            "description": "The id of the message this one "
                            "went out instead of (its template, the window "
                            "being closed), as a send call answered it",
                        },
                        "error": {
                            "type": ["string", "null"],
                            "description": "Why it failed, or was replaced; "
                            "for one still queued, why its last try did not "
                            "go (it is tried again)",
                        },
                        "created_at": {"type": "string", "format": "date-time"},
                    },
                },
            },
        },
    },
    "Metrics": {
        "type": "object",
        "required": ["period", "metrics"],
        "properties": {
            "period": {
                "type": "object",
                "required": ["start", "end"],
                "properties": {
                    "start": {"type": "string", "format": "date-time"},
                    "end": {"type": "string", "format": "date-time"},
                },
            },
            "metrics": {
                "type": "object",
                "required": [
                    "sent",
                    "delivered",
                    "read",
                    "failed",
                    "queued",
                    "delivery_rate",
                    "read_rate",
                ],
                "properties": {
                    "sent": {"type": "integer", "description": "accepted by Meta"},
                    "delivered": {"type": "integer", "description": "incl. read"},
                    "read": {"type": "integer"},
                    "failed": {"type": "integer"},
                    "queued": {"type": "integer", "description": "not sent yet"},
                    "delivery_rate": {"type": "number", "description": "% of sent"},
                    "read_rate": {"type": "number", "description": "% of delivered"},
                },
            },
        },
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref(name)}},
    }


ERRORS = {
    "400": _json("Error", "Invalid body or phone number"),
    "401": _json("Error", "No bearer token, or an unknown one"),
    "403": _json("Error", "The token lacks the role"),
    "404": _json("Error", "No such path"),
    "503": {
        **_json(
            "Error",
            "The database is unavailable; try again after the `Retry-After` seconds",
        ),
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before trying again",
                "schema": {"type": "integer"},
            }
        },
    },
}


SEND_TEXT = (
    "Role: backend. Queues and answers at once; it never waits for Meta. The "
    "whole text is always delivered, never cut: the driver's 24-hour window "
    "is checked once, when the call is made. Open: the text goes free-form, "
    "split at paragraphs into parts of at most 4096 characters; each part of "
    "at most 1024 characters also carries the `text` template, in case the "
    "window closes before it leaves. Closed: the text goes as one `text` "
    "template per part of at most 1024 characters (a template parameter's "
    "limit), its new lines and runs of spaces made single spaces, as Meta "
    "requires; `message_ids` lists every part. Closed with no `text` template "
    "configured: 409, nothing queued."
)


PHONE_PARAMETER = {"name": "phone", "in": "path", "required": True, "schema": PHONE}

REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true` when the answer is the one kept under the "
        "call's Idempotency-Key: nothing was queued this time",
        "schema": {"type": "string", "enum": ["true"]},
    }
}

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1 to 255 printable ASCII characters naming this call. "
    "Made again with the same key, path, token and body bytes (a retry after "
    "a timeout or a 503), the call queues nothing and answers what it "
    "answered the first time, with `Idempotent-Replayed: true`; with another "
    "path, token or body (the same JSON written otherwise counts as another), "
    "422. A call that failed kept nothing: its retry is a new call.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def _send(summary: str, schema: str, role: str = "backend") -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": f"Role: {role}. Queues and answers at once; it never "
            "waits for Meta. Outside the driver's 24-hour window the configured "
            "template goes out instead.",
            "security": [{"bearer": []}],
            "parameters": [IDEMPOTENCY_KEY],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(schema)}},
            },
            "responses": {
                "202": {**_json("Queued", "Queued"), "headers": REPLAYED},
                **ERRORS,
                "413": _json("Error", "The body is larger than server.max_body_bytes"),
                "422": _json("Error", "The Idempotency-Key was used for another call"),
            },
        }
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the backend API."""
    alert = _send("Alert a list of admins", "Alert")
    alert["post"]["responses"]["202"] = _json(
        "AlertResults",
        "One result per input phone, in order; invalid ones are reported, not "
        "queued, and a number given twice is sent once (`duplicate` carries "
        "the ids of the first). `unreachable`: the phone's 24-hour window is "
        "closed and no `templates.alert` template is configured. Every phone "
        "is queued in one transaction: a 503 queued none of them.",
    )
    alert["post"]["responses"]["409"] = _json(
        "Error",
        "No valid phone is reachable: each one's window is closed and no "
        "`templates.alert` template is configured",
    )
    alert["post"]["description"] += (
        " A template parameter holds 1,024 characters on one line: outside the "
        "window, a longer `descripcion` is cut there with an ellipsis, and its "
        "line breaks become spaces."
    )
    send_text = _send("Send a text", "SendText")
    send_text["post"]["description"] = SEND_TEXT
    send_text["post"]["responses"]["409"] = _json(
        "Error", "The window is closed and no `text` template is configured"
    )
    notifications = {}
    for kind, summary, schema in (
        ("trip_status", "Notify a trip status", "TripStatus"),
        ("guide_created", "Notify a created guide", "GuideCreated"),
    ):
        notifications[kind] = _send(summary, schema)
        notifications[kind]["post"]["responses"]["409"] = _json(
            "Error",
            f"The window is closed and no `templates.{kind}` template is configured",
        )
        notifications[kind]["post"]["responses"]["500"] = _json(
            "Error", "The notification's template failed (the log says where)"
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tracbot backend API",
            "version": "1.0.0",
            "description": "Send WhatsApp messages and notifications to Tracmin's "
            "drivers and admins; read history and delivery metrics.",
        },
        "servers": [{"url": "/"}],
        "paths": {
            f"{PREFIX}/send_text": send_text,
            f"{PREFIX}/send_template": _send(
                "Send an approved template", "SendTemplate"
            ),
            f"{PREFIX}/notify/trip_status": notifications["trip_status"],
            f"{PREFIX}/notify/guide_created": notifications["guide_created"],
            f"{PREFIX}/alert": alert,
            f"{PREFIX}/messages/{{id}}": {
                "get": {
                    "summary": "How a queued message stands",
                    "description": "Role: backend. By the id a send, notify or "
                    "alert call answered in `message_ids`.",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 1},
                        }
                    ],
                    "responses": {
                        "200": _json("Message", "The message"),
                        **ERRORS,
                        "404": _json("Error", "No message has this id"),
                    },
                }
            },
            f"{PREFIX}/links/{{phone}}": {
                "get": {
                    "summary": "The driver account a phone acts for",
                    "description": "Role: backend.",
                    "security": [{"bearer": []}],
                    "parameters": [PHONE_PARAMETER],
                    "responses": {"200": _json("Link", "The link, or none"), **ERRORS},
                },
                "delete": {
                    "summary": "Unlink a phone (a driver who left)",
                    "description": "Role: backend. The number no longer acts "
                    "for the account: a driver's commands answer as to any "
                    "unlinked number. A number the business data still has on "
                    "file (`driver_by_phone`) links again at its next message: "
                    "take it off there too.",
                    "security": [{"bearer": []}],
                    "parameters": [PHONE_PARAMETER],
                    "responses": {"200": _json("Unlinked", "Done"), **ERRORS},
                },
            },
            f"{PREFIX}/history/{{phone}}": {
                "get": {
                    "summary": "A phone's messages, newest first",
                    "description": "Role: admin.",
                    "security": [{"bearer": []}],
                    "parameters": [
                        PHONE_PARAMETER,
                        _query(
                            "limit",
                            {"type": "integer", "minimum": 1, "default": 50},
                            "Page size (at most api.max_page)",
                        ),
                        _query(
                            "offset",
                            {"type": "integer", "minimum": 0, "default": 0},
                            "Messages to skip",
                        ),
                    ],
                    "responses": {"200": _json("History", "One page"), **ERRORS},
                }
            },
            f"{PREFIX}/metrics": {
                "get": {
                    "summary": "Delivery metrics over a period",
                    "description": "Role: admin. Counts messages created in "
                    "[start_date, end_date); default: the last 30 days.",
                    "security": [{"bearer": []}],
                    "parameters": [
                        _query(
                            "start_date",
                            {"type": "string", "format": "date-time"},
                            "ISO 8601; UTC if no offset",
                        ),
                        _query(
                            "end_date",
                            {"type": "string", "format": "date-time"},
                            "ISO 8601; UTC if no offset",
                        ),
                    ],
                    "responses": {
                        "200": _json("Metrics", "Counts and rates"),
                        **ERRORS,
                    },
                }
            },
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
