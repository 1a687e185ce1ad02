"""The window template checked against the templates synced from WhatsApp: when set, and before a send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from common.channels.base import RecipientConfig
from common.channels.whatsapp import _template
from common.delivery.window import WindowTemplate, decide, template_problem, usable_templates
from common.domain import Channel

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
SYNCED = [
    {"name": "support_followup", "language": "en_US", "status": "APPROVED", "body_parameters": 1},
    {"name": "order_update", "language": "en_US", "status": "PENDING", "body_parameters": 2},
    {"name": "two_slots", "language": "en_US", "status": "APPROVED", "body_parameters": 2},
]


def test_graph_templates_count_their_body_placeholders_once_each() -> None:
    item = {
        "name": "t",
        "language": "en_US",
        "status": "approved",
        "category": "UTILITY",
        "components": [
            {"type": "HEADER", "format": "TEXT", "text": "Hi {{1}}"},
            {"type": "BODY", "text": "About {{1}}: {{2}}, again {{1}}"},
        ],
    }
    assert _template(item) == {
        "name": "t",
        "language": "en_US",
        "status": "APPROVED",
        "category": "UTILITY",
        "body_parameters": 2,
    }


def test_an_approved_template_with_as_many_parameters_as_given_can_carry_a_reply() -> None:
    settings = {"templates": SYNCED}
    assert [t["name"] for t in usable_templates(settings)] == ["support_followup", "two_slots"]
    assert template_problem(settings, WindowTemplate(name="support_followup", language="en_US")) is None
    assert "PENDING" in (
        template_problem(settings, WindowTemplate(name="order_update", language="en_US")) or ""
    )
    # Two body parameters: one default "{reply}" is not enough; a fixed text and the reply are.
    short = template_problem(settings, WindowTemplate(name="two_slots", language="en_US")) or ""
    assert "has 2 body parameters and 1 are given" in short
    two = WindowTemplate(name="two_slots", language="en_US", parameters=("Customer Care", "{reply}"))
    assert template_problem(settings, two) is None
    missing = template_problem(settings, WindowTemplate(name="support_followup", language="pt_BR"))
    assert missing is not None and "not in the business account" in missing
    # Never synced: only the shape is known, and WhatsApp decides.
    assert template_problem({}, WindowTemplate(name="anything", language="en")) is None


@pytest.mark.parametrize(
    "parameters",
    [
        (),
        ("no reply here",),
        ("{reply}", "{reply}"),
        ("{reply} and {reply}",),
        ("{reply}", " "),
        ("x" * 1025,),
    ],
)
def test_the_parameters_hold_the_reply_exactly_once(parameters: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError):
        WindowTemplate(name="t", language="en_US", parameters=parameters)


def test_the_reply_fills_its_parameter_and_is_split_to_the_room_left_in_it() -> None:
    account = RecipientConfig(
        channel=Channel.WHATSAPP,
        external_id="PN",
        window="template",
        template={"name": "t", "language": "en_US", "parameters": ["Care team", "Re: {reply}"]},
    )
    assert account.template_parameters("Refunds take 5 days.") == ["Care team", "Re: Refunds take 5 days."]
    assert account.template_reply_room(1024) == 1020
    default = RecipientConfig(channel=Channel.WHATSAPP, external_id="PN", template={"name": "t"})
    assert default.template_parameters("Hi") == ["Hi"] and default.template_reply_room(1024) == 1024


def test_outside_the_window_a_template_that_became_unusable_is_held_not_sent() -> None:
    late = NOW - timedelta(hours=30)
    paused = [{**SYNCED[0], "status": "PAUSED"}]
    settings = {"window_template": {"name": "support_followup", "language": "en_US"}}
    sent = decide(channel=Channel.WHATSAPP, sender="agent", last_inbound_at=late, now=NOW, settings=settings)
    assert sent.mode == "template"
    held = decide(
        channel=Channel.WHATSAPP,
        sender="agent",
        last_inbound_at=late,
        now=NOW,
        settings={**settings, "templates": paused},
    )
    assert held.mode == "held" and "PAUSED" in held.reason
    inside = decide(
        channel=Channel.WHATSAPP,
        sender="agent",
        last_inbound_at=NOW - timedelta(hours=1),
        now=NOW,
        settings={**settings, "templates": paused},
    )
    assert inside.mode == "open"  # inside the window no template is needed
