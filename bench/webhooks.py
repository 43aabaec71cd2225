"""Signed webhook bodies for loads: one text message each, a unique wamid.

The shape is that of `/work/shared/webhooks/text_simple.json` (Meta's wire
style: compact JSON), with the sender and the wamid varied so that every
body is a new inbound message from one of many phones. With a BSUID the body
takes the 2026 shape of `text_reply_with_context.json` (`contacts[].user_id`
and `messages[].from_user_id`).
"""

from __future__ import annotations

import hashlib
import hmac
import json

BASE_PHONE = 56990000000
WABA_ID = "100000000000001"
DISPLAY_NUMBER = "56220000000"


def phone(index: int) -> str:
    """The wa_id of the index-th bench phone."""
    return str(BASE_PHONE + index)


def bsuid(index: int) -> str:
    """The business-scoped user id of the index-th bench phone."""
    return f"CL.{4800000000000000 + index}"


def wamid(run: str, index: int) -> str:
    """A wamid that no other message of any run carries."""
    return f"wamid.bench.{run}.{index:09d}"


def text_webhook(
    wa_id: str,
    message_id: str,
    text: str,
    phone_number_id: str,
    timestamp: int,
    user_id: str | None = None,
) -> bytes:
    """The compact bytes of a webhook carrying one text message.

    `user_id` (a BSUID) is added to the contact and the message when given.
    """
    contact: dict[str, object] = {"profile": {"name": "Bench"}, "wa_id": wa_id}
    message: dict[str, object] = {
        "from": wa_id,
        "id": message_id,
        "timestamp": str(timestamp),
        "type": "text",
        "text": {"body": text},
    }
    if user_id is not None:
        contact["user_id"] = user_id
        message["from_user_id"] = user_id
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": WABA_ID,
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": DISPLAY_NUMBER,
                                "phone_number_id": phone_number_id,
                            },
                            "contacts": [contact],
                            "messages": [message],
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def signature(app_secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value of these exact bytes."""
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"
