"""A reply that asks to confirm an action carries yes/no buttons on the outbound stream; others none."""

from __future__ import annotations

import uuid

from common.conversation.replies import CONFIRM_BUTTONS, outbound_payload
from common.domain import BrandProfile, Channel, GuardrailDecision, OutboundResponse


def _payload(*decisions: GuardrailDecision) -> dict:
    brand = BrandProfile(id=uuid.uuid4(), tenant_id=uuid.uuid4(), slug="b", name="B")
    response = OutboundResponse(
        conversation_id=uuid.uuid4(),
        message_id=uuid.uuid4(),
        brand_id=brand.id,
        channel=Channel.TELEGRAM,
        customer_id="42",
        text="Shall I open a ticket?",
        in_reply_to="",
        guardrails=decisions,
    )
    return outbound_payload(brand, response)


def test_a_confirmation_question_gets_the_buttons_and_an_answer_none() -> None:
    asked = _payload(GuardrailDecision("actions", "confirm", "create_ticket: asked"))
    assert asked["quick_replies"] == list(CONFIRM_BUTTONS) == ["Yes", "No"]
    answered = _payload(GuardrailDecision("groundedness", "pass", ""))
    assert answered["quick_replies"] == []
