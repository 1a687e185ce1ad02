"""A reply that asks to confirm an action carries yes/no buttons on the outbound stream; others none.
Cited sources that are public pages go as link buttons."""

from __future__ import annotations

import uuid

from common.conversation import escalation
from common.conversation.replies import CONFIRM_BUTTONS, link_buttons, outbound_payload, reply_buttons
from common.domain import BrandProfile, Channel, Citation, GuardrailDecision, OutboundResponse


def _payload(*decisions: GuardrailDecision, citations: tuple[Citation, ...] = ()) -> dict:
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
        citations=citations,
    )
    return outbound_payload(brand, response)


def test_a_confirmation_question_gets_the_buttons_and_an_answer_none() -> None:
    asked = _payload(GuardrailDecision("actions", "confirm", "create_ticket: asked"))
    assert asked["quick_replies"] == list(CONFIRM_BUTTONS) == ["Yes", "No"]
    answered = _payload(GuardrailDecision("groundedness", "pass", ""))
    assert answered["quick_replies"] == []


def cite(source: str, heading: str = "") -> Citation:
    return Citation(chunk_id=uuid.uuid4().hex, source=source, heading_path=heading, score=0.9)


def test_only_public_pages_become_link_buttons_once_each_and_at_most_three() -> None:
    citations = (
        cite("returns.md", "Returns > Refunds"),  # a file: nothing to open
        cite("upload://faq.pdf"),
        cite("https://help.example.com/returns", "Returns > Refund timing"),
        cite("https://help.example.com/returns", "Returns > Exchanges"),  # the same page again
        cite("javascript:alert(1)"),
        cite("http://help.example.com/shipping"),  # no section: a generic title
        cite("https://help.example.com/warranty", "Warranty"),
        cite("https://help.example.com/stores", "Stores"),  # a fourth page
    )
    buttons = link_buttons(citations)
    assert [(b.title, b.url) for b in buttons] == [
        ("Refund timing", "https://help.example.com/returns"),
        ("Read more", "http://help.example.com/shipping"),
        ("Warranty", "https://help.example.com/warranty"),
    ]
    assert _payload(citations=citations)["links"] == [b.model_dump() for b in buttons]
    assert _payload(citations=(cite("shipping.md", "Shipping"),))["links"] == []


def test_a_reply_that_could_not_answer_carries_the_suggestions_a_confirmation_wins() -> None:
    offered = escalation.suggestion(["Delivery times", "Refunds", "Store hours", "Warranty claims"])
    assert _payload(offered)["quick_replies"] == [
        "Delivery times",
        "Refunds",
        "Store hours",
        "Warranty claims",
    ]
    # Stored as dicts (history, SSE): read back the same way.
    assert reply_buttons([{"rule": offered.rule, "action": offered.action, "reason": offered.reason}]) == [
        "Delivery times",
        "Refunds",
        "Store hours",
        "Warranty claims",
    ]
    confirm = GuardrailDecision("actions", "confirm", "create_ticket: asked")
    assert _payload(offered, confirm)["quick_replies"] == ["Yes", "No"]
    assert reply_buttons([GuardrailDecision("suggestions", "options", "not json")]) == []
