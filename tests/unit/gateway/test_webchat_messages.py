"""What the web chat shows of a logged message: its public fields, and reply buttons for a confirmation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from common.db.models import MessageLog
from serve_apps.webchat.events import message_out


def _row(direction: str, guardrails: list[dict]) -> MessageLog:
    return MessageLog(
        id=uuid.uuid4(),
        conversation_id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        brand_id=uuid.uuid4(),
        channel="webchat",
        direction=direction,
        text="Shall I open a ticket about your order?",
        citations=[],
        guardrails=guardrails,
        created_at=datetime.now(UTC),
    )


def test_a_confirmation_question_carries_yes_and_no_buttons() -> None:
    confirm = [{"rule": "actions", "action": "confirm", "reason": "create_ticket needs a yes"}]
    assert message_out(_row("outbound", confirm)).buttons == ["Yes", "No"]


def test_other_replies_and_visitor_messages_have_none() -> None:
    assert (
        message_out(_row("outbound", [{"rule": "groundedness", "action": "pass", "reason": ""}])).buttons
        == []
    )
    # A visitor's own message never offers buttons, whatever its row says.
    assert (
        message_out(_row("inbound", [{"rule": "actions", "action": "confirm", "reason": ""}])).buttons == []
    )
