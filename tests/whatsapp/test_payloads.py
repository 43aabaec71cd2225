"""The parser on the corpus: what each body becomes."""

from __future__ import annotations

import json

import pytest

from bot.whatsapp.events import (
    InboundMessage,
    Notice,
    StatusUpdate,
    from_json,
    to_json,
)
from bot.whatsapp.payloads import parse_body
from tests.support import WEBHOOKS, corpus


def events_of(name: str):
    return parse_body(json.loads(corpus(name))).events


def test_emoji_and_accents_decode_to_the_unicode_text():
    [message] = events_of("text_with_emoji_and_accents.json")
    assert len(message.text) == 119
    assert message.text.startswith("¿")
    assert "🚛" in message.text
    assert "https://" in message.text


def test_reaction_removal_without_emoji_key():
    [message] = events_of("reaction_removed.json")
    assert message.type == "reaction"
    assert message.reaction_to.startswith("wamid.")
    assert message.reaction_emoji is None


def test_reaction_added_keeps_the_emoji():
    [message] = events_of("reaction_added.json")
    assert message.reaction_emoji == "\u2764\ufe0f"


def test_number_change_names_the_new_number():
    [message] = events_of("system_number_changed.json")
    assert (message.wa_id, message.new_wa_id) == ("56911120019", "56911120029")
    assert message.profile_name is None


def test_a_number_change_to_something_not_a_number_moves_nothing():
    # `"wa_id": "hola"` made a conversation keyed "hola".
    body = json.loads(corpus("system_number_changed.json"))
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    message["system"]["wa_id"] = "hola"
    [event] = parse_body(body).events
    assert event.type == "system" and event.new_wa_id is None


def test_status_without_profile_is_parsed():
    [status] = events_of("status_delivered.json")
    assert isinstance(status, StatusUpdate)
    assert status.status == "delivered"
    assert status.key == f"{status.wamid}:delivered"


def test_failed_status_keeps_its_code():
    [status] = events_of("status_failed_131047.json")
    assert status.error_code == 131047


def test_messages_and_statuses_in_one_post():
    kinds = [e.kind for e in events_of("messages_and_statuses_one_post.json")]
    assert sorted(kinds) == ["message", "status"]


def test_button_reply_routes_by_id_not_title():
    [message] = events_of("interactive_button_reply.json")
    assert message.reply_id == "confirm_arrival:VJ-20931"
    assert message.reply_title == "Sí, llegué"


def test_template_quick_reply_payload():
    [message] = events_of("button_template_quick_reply.json")
    assert message.type == "button"
    assert message.reply_id == "TRIP_STATUS:VJ-20877"


def test_bare_location_pin():
    [message] = events_of("location_pin.json")
    assert message.location is not None
    assert message.location.name is None


def test_voice_note_is_media_with_voice_flag():
    [message] = events_of("audio_voice_note.json")
    assert message.media.voice is True


def test_missing_contacts_still_parses():
    [message] = events_of("malformed_missing_contacts.json")
    assert message.text.lower() == "guia"
    assert message.profile_name is None


def test_other_field_is_a_notice():
    [notice] = events_of("other_field_message_template_status_update.json")
    assert isinstance(notice, Notice)
    assert notice.topic == "message_template_status_update"


@pytest.mark.parametrize(
    "data",
    [None, [], 3, "x", {"object": "page"}, {"object": "whatsapp_business_account"}],
)
def test_odd_bodies_never_raise(data):
    result = parse_body(data)
    assert isinstance(result.events, list)


@pytest.mark.parametrize("path", sorted(WEBHOOKS.glob("*.json")), ids=lambda p: p.name)
def test_events_survive_the_json_round_trip(path):
    for event in parse_body(json.loads(path.read_bytes())).events:
        assert from_json(json.loads(json.dumps(to_json(event)))) == event


def test_inbound_ids_are_distinct_across_the_corpus():
    keys = [
        e.key
        for p in WEBHOOKS.glob("*.json")
        for e in parse_body(json.loads(p.read_bytes())).events
        if isinstance(e, InboundMessage)
    ]
    assert len(keys) == len(set(keys))
