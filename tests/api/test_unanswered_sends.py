"""A send whose answer never comes (the Graph API slower than
`whatsapp.timeout_seconds`) is not sent again when Meta had it: its status
webhooks, which echo the send's callback data, find it first. Sent again at
once, each reply went out three times (an operator's 3 a.m. run)."""

from __future__ import annotations

from bench import procs
from tests.api.test_serve_end_to_end import (
    ADMIN,
    BACKEND,
    CAMILA,
    call,
    running,
    wait_until,
)


def test_a_send_answered_too_late_goes_once_and_its_statuses_count(tmp_path):
    config = procs.write_config(tmp_path, {"whatsapp.timeout_seconds": 1})
    with running(tmp_path, config) as (graph, bot):
        api = f"{bot}/api/whatsapp"
        assert call(f"{graph}/_sim/delay", {"seconds": 2.5})[0] == 200

        status, body = call(
            f"{api}/send_template",
            {"phone": CAMILA, "template_name": "mensaje_tracmin", "parameters": ["x"]},
            BACKEND,
        )
        assert status == 202, body
        [sent_id] = body["message_ids"]

        def delivered():
            _, history = call(f"{api}/history/{CAMILA}", token=ADMIN)
            [message] = history["messages"]
            return message if message["status"] == "delivered" else None

        message = wait_until(delivered)
        _, received = call(f"{graph}/_sim/messages")

    # The sender timed out after 1 s; the simulator took it at 2.5 s and
    # told of it: the status found the item, which is Meta's, not queued.
    [accepted] = [r for r in received if r["wamid"]]
    assert accepted["body"]["biz_opaque_callback_data"] == f"tracbot:outbox:{sent_id}"
    assert message["id"] == sent_id
    assert message["message_id"] == accepted["wamid"]
    assert (tmp_path / "serve.log").read_text().count("timed out after 1 s") == 1
