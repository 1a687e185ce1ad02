"""Action extraction, validation and plugin authorization; escalation triggers; persona prompting.

No servers: plugins run against in-memory backends or the FAKE commerce app through httpx.ASGITransport.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest

from common.config import ActionSettings, EscalationSettings
from common.conversation import escalation, prompting
from common.conversation.actions import ActionContext, ActionRegistry, PluginDeps
from common.conversation.actions.engine import (
    MALFORMED,
    ActionEngine,
    Proposal,
    extract_actions,
    is_affirmative,
    is_negative,
    message_key,
)
from common.conversation.actions.plugins.create_ticket import CreateTicket, HttpTicketBackend
from common.conversation.actions.plugins.order_lookup import HttpOrderBackend, Order, OrderLookup
from common.conversation.guardrails import check_output
from common.domain import BrandProfile, Channel, Persona
from tests.fakes.commerce import API_KEY, FakeCommerceState, build_fake_app


def _context(customer: str = "cust-a") -> ActionContext:
    return ActionContext(
        tenant_id=uuid.uuid4(),
        brand_id=uuid.uuid4(),
        conversation_id=uuid.uuid4(),
        channel=Channel.WHATSAPP,
        customer_id=customer,
        question="where is my order?",
        idempotency_key="k-1",
    )


# --- extraction -----------------------------------------------------------------------------------


def test_fenced_action_block_is_extracted_and_removed():
    text = 'Let me check.\n```action\n{"action": "order_lookup", "arguments": {"order_id": "A-1"}}\n```'
    out = extract_actions(text)
    assert out.text == "Let me check."
    assert out.proposals == (Proposal("order_lookup", {"order_id": "A-1"}),)


def test_bare_json_and_flat_arguments_are_recognised():
    out = extract_actions('Checking {"action": "order_lookup", "order_id": "A-1"} now')
    assert out.proposals == (Proposal("order_lookup", {"order_id": "A-1"}),)
    assert "{" not in out.text and "order_lookup" not in out.text


@pytest.mark.parametrize(
    "raw",
    [
        "```action\n{not json at all\n```",
        'Sure ```action\n{"action": "order_lookup", "arguments": {"order_id": ',  # unterminated fence
        'Here {"action": "order_lookup", "arguments": {"order_id": "A-1"',  # unterminated bare object
        '```action\n["order_lookup"]\n```',
        '```action\n{"arguments": {"order_id": "A-1"}}\n```',
    ],
)
def test_malformed_blocks_are_never_left_in_the_text(raw):
    out = extract_actions(raw)
    assert out.proposals and all(p.error for p in out.proposals)
    assert "```" not in out.text and "order_lookup" not in out.text and "{" not in out.text


def test_plain_text_has_no_proposals():
    out = extract_actions("Returns are accepted within 30 days.")
    assert out.proposals == () and out.text == "Returns are accepted within 30 days."


def test_yes_no():
    assert is_affirmative("Yes please") and is_affirmative("sí, claro") and is_affirmative("ok")
    assert not is_affirmative("no thanks") and not is_affirmative("what is yes?")
    assert is_negative("No, don't") and not is_negative("yes")


def test_message_key_is_stable_and_distinct():
    brand = uuid.uuid4()
    a = message_key(brand_id=brand, channel=Channel.WHATSAPP, provider_message_id="m1")
    assert a == message_key(brand_id=brand, channel=Channel.WHATSAPP, provider_message_id="m1")
    assert a != message_key(brand_id=brand, channel=Channel.TELEGRAM, provider_message_id="m1")


# --- validation -----------------------------------------------------------------------------------


class _Orders:
    def __init__(self, orders: dict[str, Order]) -> None:
        self.orders = orders
        self.asked: list[str] = []

    async def get_order(self, order_id: str) -> Order | None:
        self.asked.append(order_id)
        return self.orders.get(order_id)


def _engine(*plugins) -> ActionEngine:
    return ActionEngine(
        registry=ActionRegistry(plugins),
        sessionmaker=None,  # type: ignore[arg-type]  # _vet never touches the database
        settings=ActionSettings(),
    )


@pytest.mark.parametrize(
    ("proposal", "allowed", "tainted", "reason"),
    [
        (Proposal(MALFORMED, {}, "unparseable JSON"), ("order_lookup",), False, "unparseable JSON"),
        (Proposal("drop_tables", {}), ("order_lookup",), False, "unknown action"),
        (Proposal("order_lookup", {"order_id": "A-1"}), (), False, "not allowed for this brand"),
        (Proposal("order_lookup", {"order_id": "A-1"}), ("order_lookup",), True, "retrieved context"),
        (
            Proposal("order_lookup", {"order_id": "A-1", "customer_id": "b"}),
            ("order_lookup",),
            False,
            "invalid",
        ),
        (Proposal("order_lookup", {"order_id": "../admin"}), ("order_lookup",), False, "invalid"),
        (Proposal("order_lookup", {}), ("order_lookup",), False, "invalid"),
    ],
)
def test_vetting_rejects(proposal, allowed, tainted, reason):
    engine = _engine(OrderLookup(_Orders({})))
    plugin, why = engine._vet(proposal, allowed=allowed, tainted=tainted, index=0)
    assert plugin is None and reason in why


def test_vetting_accepts_a_valid_allowed_proposal():
    engine = _engine(OrderLookup(_Orders({})))
    plugin, why = engine._vet(
        Proposal("order_lookup", {"order_id": "A-1"}), allowed=("order_lookup",), tainted=False, index=0
    )
    assert plugin is not None and why == ""


def test_allow_list_defaults_and_brand_rules():
    engine = _engine(OrderLookup(_Orders({})))
    assert engine.allowed(None) == ()  # default ["faq_fallback"] is not registered here
    assert engine.allowed(("order_lookup", "create_ticket")) == ("order_lookup",)


# --- plugins --------------------------------------------------------------------------------------


async def test_order_lookup_denies_another_customers_order_like_a_missing_one():
    orders = _Orders(
        {
            "A-1": Order(id="A-1", customer_id="cust-a", status="shipped"),
            "B-2": Order(id="B-2", customer_id="cust-b", status="packed", tracking_url="https://t/b"),
        }
    )
    plugin = OrderLookup(orders)
    own = await plugin.run({"order_id": "A-1"}, _context("cust-a"))
    other = await plugin.run({"order_id": "B-2"}, _context("cust-a"))
    missing = await plugin.run({"order_id": "Z-9"}, _context("cust-a"))
    assert own.status == "succeeded" and "shipped" in own.summary
    assert other.status == "denied" and "packed" not in other.summary and "https://t/b" not in other.summary
    assert other.summary.replace("B-2", "X") == missing.summary.replace("Z-9", "X")


async def test_http_backends_talk_to_the_fake_with_the_api_key():
    state = FakeCommerceState(orders={"A-1": {"id": "A-1", "customer_id": "cust-a", "status": "shipped"}})
    transport = httpx.ASGITransport(app=build_fake_app(state))
    deps = PluginDeps(ActionSettings(commerce_api_key=API_KEY, helpdesk_api_key=API_KEY), transport=transport)
    order = await HttpOrderBackend(deps, "http://fake").get_order("A-1")
    assert order is not None and order.customer_id == "cust-a"
    assert await HttpOrderBackend(deps, "http://fake").get_order("nope") is None
    tickets = CreateTicket(HttpTicketBackend(deps, "http://fake"))
    first = await tickets.run({"subject": "Broken zip", "description": "It broke"}, _context())
    again = await tickets.run({"subject": "Broken zip", "description": "It broke"}, _context())
    assert first.status == "succeeded" and again.data == first.data  # same idempotency key
    assert len(state.tickets) == 1 and state.tickets[0]["customer_id"] == "cust-a"
    assert state.unauthorized == 0


async def test_wrong_api_key_fails_closed():
    state = FakeCommerceState(orders={"A-1": {"id": "A-1", "customer_id": "cust-a", "status": "shipped"}})
    deps = PluginDeps(
        ActionSettings(commerce_api_key="wrong"), transport=httpx.ASGITransport(app=build_fake_app(state))
    )
    result = await OrderLookup(HttpOrderBackend(deps, "http://fake")).run({"order_id": "A-1"}, _context())
    assert result.status == "failed" and "shipped" not in result.summary


def test_ticket_confirmation_wording():
    plugin = CreateTicket(HttpTicketBackend(PluginDeps(ActionSettings()), "http://unused"))
    assert plugin.confirmation({"subject": "Broken  zip"}).startswith(
        'Shall I open a ticket for our team about "Broken zip"?'
    )


# --- escalation triggers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Can I talk to a real person?",
        "I want to speak with an agent",
        "human please",
        "agent",
        "Quiero hablar con una persona",
        "Je veux parler à un conseiller",
    ],
)
def test_wants_human(text):
    assert escalation.wants_human(text)


@pytest.mark.parametrize("text", ["How long do I have to return an item?", "Is the agent of change a book?"])
def test_not_a_request_for_a_human(text):
    assert not escalation.wants_human(text)


def test_sentiment():
    assert escalation.sentiment("This is terrible, your service is useless!") <= -0.5
    assert escalation.sentiment("My bag arrived with a bad zipper") > -0.5
    assert escalation.sentiment("Not bad at all, thanks!") > 0
    assert escalation.sentiment("not good") < 0


def _rules(*configs: tuple[str, str, dict]) -> escalation.BrandRules:
    class Row:
        def __init__(self, name: str, kind: str, config: dict) -> None:
            self.name, self.kind, self.config = name, kind, config

    return escalation.BrandRules.from_rows(Row(*c) for c in configs)


def test_automation_rules_keywords_vip_hours_and_invalid():
    rules = _rules(
        ("legal", "escalate", {"keywords": ["lawyer", "chargeback"]}),
        ("vip", "escalate", {"customer_ids": ["vip-1"]}),
        (
            "night",
            "escalate",
            {
                "business_hours": {"timezone": "Europe/Berlin", "start": "09:00", "end": "17:00"},
                "when": "inside",
                "keywords": ["urgent"],
            },
        ),
        ("broken", "escalate", {"keywords": "not-a-list", "bogus": 1}),
        ("acts", "actions", {"allowed": ["order_lookup"]}),
    )
    assert [name for name, _ in rules.escalate] == ["legal", "vip", "night"]
    assert rules.allowed_actions == ("order_lookup",)
    settings = EscalationSettings()
    monday_noon = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)  # 12:00 in Berlin
    sunday = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)

    def trigger(text, customer="c", now=monday_noon):
        found = escalation.input_trigger(
            text=text, customer_id=customer, rules=rules, settings=settings, now=now
        )
        return found.rule if found else None

    assert trigger("I'll call my Lawyer") == "escalation:automation_rule"
    assert trigger("lawyers are expensive") is None  # whole words only
    assert trigger("hello", customer="vip-1") == "escalation:automation_rule"
    assert trigger("urgent: where is my parcel") == "escalation:automation_rule"
    assert trigger("urgent: where is my parcel", now=sunday) is None
    assert trigger("Can I speak to a human?") == "escalation:human_requested"
    assert trigger("This is the worst, absolutely useless service") == "escalation:negative_sentiment"
    assert trigger("Where is my parcel?") is None


def test_streaks_count_only_consecutive_failures():
    ok = [{"rule": "groundedness", "action": "pass"}]
    replaced = [{"rule": "groundedness", "action": "replace"}]
    none = [{"rule": "groundedness", "action": "escalate"}]
    assert escalation.streaks([ok, replaced, replaced]) == (2, 0)
    assert escalation.streaks([replaced, ok, none]) == (1, 1)
    assert escalation.streaks([none, none]) == (2, 2)
    assert escalation.streaks([]) == (0, 0)


# --- persona prompting and output guardrails ------------------------------------------------------

BRAND = BrandProfile(
    id=uuid.uuid4(),
    tenant_id=uuid.uuid4(),
    slug="acme",
    name="Acme",
    persona=Persona(languages=("en", "es"), greeting="Hola!", escalation_message="A colleague will help."),
)


def test_reply_language_follows_the_customer_when_allowed():
    assert prompting.reply_language(BRAND.persona, "¿Cuánto tiempo tengo para devolver un artículo?") == "es"
    assert prompting.reply_language(BRAND.persona, "Wie lange habe ich Zeit für die Rückgabe?") == "en"
    system = prompting.system_prompt(BRAND, question="¿Dónde está mi pedido? Lo quiero para el lunes")
    assert "Reply in Spanish (es)" in system


def test_prompt_has_greeting_on_first_turn_escalation_wording_and_tools():
    plugin = OrderLookup(_Orders({}))
    first = prompting.system_prompt(BRAND, question="hi", first_turn=True, tools=[plugin])
    later = prompting.system_prompt(BRAND, question="hi", first_turn=False)
    assert "Hola!" in first and "Hola!" not in later
    assert "A colleague will help." in later
    assert "order_lookup" in first and "```action" in first and "order_lookup" not in later
    assert prompting.PROMPT_VERSION in prompting.TEMPLATES


def test_output_masks_pii_except_the_customers_own_and_replaces_toxic_text():
    out = check_output(
        "Mail jane@example.com or bob@example.org", allowed_pii=["jane@example.com"], persona=BRAND.persona
    )
    assert out.text == "Mail jane@example.com or [email]" and out.decisions[0].action == "mask"
    toxic = check_output("You stupid idiot", allowed_pii=[], persona=BRAND.persona)
    assert toxic.toxic and toxic.text == BRAND.persona.fallback_message
