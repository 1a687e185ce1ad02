"""When the bot hands a conversation to a human, and the event agents see when it does.

Triggers (each becomes a ``GuardrailDecision`` with rule ``escalation:<trigger>`` and action ``escalate``):

* ``human_requested`` — the customer asks for a person (:func:`wants_human`, a multilingual phrase list);
* ``negative_sentiment`` — lexicon sentiment (:func:`sentiment`) at or below the configured threshold;
* ``automation_rule`` — a brand rule of kind ``escalate`` matched (keywords, VIP customer ids, inside or
  outside business hours; every condition a rule names must hold);
* ``no_knowledge`` — N turns in a row without relevant knowledge;
* ``failed_answers`` — N bot answers in a row that a guardrail replaced or that fell back;
* ``guardrail`` — a prompt-injection attempt or toxicity.

The orchestrator applies the decision: conversation state → ``handoff``, the persona's escalation message
to the customer, and an :class:`AgentEvent` on the ``agent-events`` stream, written through the outbox in
the same transaction as the state change. Automation rules of kind ``actions`` carry the brand's action
allow-list (see :mod:`common.conversation.actions.engine`); rules of kind ``offer`` propose an action
when the customer's words match (:class:`OfferRuleConfig`), with no model involved.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.config import EscalationSettings
from common.domain import GuardrailDecision, utcnow
from common.logging import get_logger

log = get_logger(__name__)

RULE_PREFIX = "escalation:"
ESCALATE_RULE_KIND = "escalate"
ACTIONS_RULE_KIND = "actions"
OFFER_RULE_KIND = "offer"
SUGGEST_RULE_KIND = "suggest"
#: The one placeholder an ``offer`` rule's arguments may use: the customer's message.
MESSAGE_PLACEHOLDER = "{message}"

_HUMAN_PATTERNS = (
    # English
    r"\b(talk|speak|chat|connect|transfer|put)\b.{0,30}\b(human|person|agent|someone|somebody|"
    r"representative|rep|staff|operator|manager|supervisor|real people)\b",
    r"\b(real|live|actual)\s+(person|human|agent|people)\b",
    r"\bhuman\s+(please|agent|being)\b",
    r"^\s*(agent|human|operator|representative)\s*[.!?]*\s*$",
    r"\bcustomer\s+(care|service)\s+(agent|rep|representative)\b",
    # Spanish, French, German, Portuguese, Italian
    r"\b(hablar|comunicarme|contactar)\b.{0,30}\b(persona|humano|agente|alguien|asesor)\b",
    r"\b(parler|contacter)\b.{0,30}\b(humain|personne|conseiller|agent)\b",
    r"\b(mit)\b.{0,30}\b(mensch|mitarbeiter|menschen|berater)\b.{0,20}\b(sprechen|reden)\b",
    r"\b(falar)\b.{0,30}\b(pessoa|humano|atendente|agente)\b",
    r"\b(parlare)\b.{0,30}\b(persona|umano|operatore)\b",
)
_HUMAN = re.compile("|".join(f"(?:{p})" for p in _HUMAN_PATTERNS), re.IGNORECASE)

#: Sentiment lexicon: word → weight (negative words below zero). Strong words weigh 2.
_STRONG_NEGATIVE = """
    terrible horrible awful worst useless furious disgusting unacceptable ridiculous scam scammed outraged
    outrageous pathetic incompetent hate hated livid appalling nightmare disgraceful horrendous fraud
    pésimo estafa inaceptable furioso furiosa harta harto
"""
_NEGATIVE = """
    bad angry annoyed annoying upset disappointed disappointing frustrated frustrating poor broken late
    wrong worse rude slow waste wasted sucks unhappy fed complaint complain ignored
    malo mala enfadado enfadada molesto molesta decepcionado decepcionada roto rota tarde
"""
_POSITIVE = """
    good great thanks thank love loved excellent perfect awesome happy helpful nice amazing fantastic
    wonderful appreciate gracias genial perfecto excelente
"""
_LEXICON: dict[str, int] = {
    **dict.fromkeys(_NEGATIVE.split(), -1),
    **dict.fromkeys(_STRONG_NEGATIVE.split(), -2),
    **dict.fromkeys(_POSITIVE.split(), 1),
}
_NEGATIONS = frozenset("not no never isn't wasn't don't doesn't didn't aren't nothing ni nunca".split())  # noqa: SIM905
_INTENSIFIERS = frozenset("very so really extremely totally absolutely completely muy".split())  # noqa: SIM905
_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)
#: Net lexicon weight that maps to a score of -1 / +1.
_SATURATION = 4


def wants_human(text: str) -> bool:
    """The customer asks to talk to a person (English, Spanish, French, German, Portuguese, Italian)."""
    return bool(_HUMAN.search(text))


def sentiment(text: str) -> float:
    """Lexicon sentiment in ``[-1, 1]``: weighted words, flipped after a negation, doubled after an
    intensifier, saturating at a net weight of four (one strong word is -0.5, "bad zipper" -0.25)."""
    tokens = [t.lower() for t in _TOKEN.findall(text)]
    total = 0
    for i, token in enumerate(tokens):
        weight = _LEXICON.get(token, 0)
        if not weight:
            continue
        window = tokens[max(0, i - 3) : i]
        if any(w in _NEGATIONS for w in window):
            weight = -weight if weight > 0 else 0  # "not good" is negative; "not bad" is neutral
        if i and tokens[i - 1] in _INTENSIFIERS:
            weight *= 2
        total += weight
    if "!!" in text or (len(text) > 12 and text.isupper()):
        total -= 1 if total < 0 else 0
    return max(-1.0, min(1.0, total / _SATURATION))


class BusinessHours(BaseModel):
    """A weekly schedule: ``days`` (0 = Monday) between ``start`` and ``end`` in ``timezone``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "UTC"
    days: tuple[int, ...] = (0, 1, 2, 3, 4)
    start: time = time(9, 0)
    end: time = time(17, 0)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    def contains(self, moment: datetime) -> bool:
        """Whether ``moment`` (aware) falls inside the schedule."""
        local = moment.astimezone(ZoneInfo(self.timezone))
        return local.weekday() in self.days and self.start <= local.time() < self.end


class EscalateRuleConfig(BaseModel):
    """Config of an automation rule of kind ``escalate``; every condition it names must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keywords: tuple[str, ...] = ()
    customer_ids: tuple[str, ...] = Field(default=(), description="VIP customers: always a human")
    business_hours: BusinessHours | None = None
    when: Literal["inside", "outside"] = Field(
        default="inside", description="With business_hours: match inside or outside them"
    )
    reason: str = ""

    def matches(self, *, text: str, customer_id: str, now: datetime) -> bool:
        """True when every configured condition holds (a rule with no condition never matches)."""
        if not (self.keywords or self.customer_ids or self.business_hours):
            return False
        if self.keywords and not any(_has_word(text, k) for k in self.keywords):
            return False
        if self.customer_ids and customer_id not in self.customer_ids:
            return False
        if self.business_hours is not None:
            inside = self.business_hours.contains(now)
            if inside != (self.when == "inside"):
                return False
        return True


class ActionsRuleConfig(BaseModel):
    """Config of an automation rule of kind ``actions``: the actions the brand allows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed: tuple[str, ...]


class OfferRuleConfig(BaseModel):
    """Config of an automation rule of kind ``offer``: when the message has one of ``keywords``, propose
    ``action`` with ``arguments`` (``{message}`` in a value is the customer's message) instead of asking
    the model. The proposal goes through the action engine like the model's own (allow-list, schema,
    confirmation), so the customer still confirms before anything happens: the deterministic path for
    the flows a brand does not want to leave to a model's judgement ("open a ticket", "complaint")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keywords: tuple[str, ...] = Field(min_length=1, max_length=50)
    action: str = Field(min_length=1, max_length=100)
    arguments: dict[str, str] = Field(default_factory=dict)

    @field_validator("keywords")
    @classmethod
    def _words(cls, keywords: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(k.strip() for k in keywords)
        if any(not k or len(k) > 100 for k in cleaned):
            raise ValueError("keywords must be 1 to 100 characters")
        return cleaned

    @field_validator("arguments")
    @classmethod
    def _placeholders(cls, arguments: dict[str, str]) -> dict[str, str]:
        for name, value in arguments.items():
            if re.search(r"\{[^}]*\}", value.replace(MESSAGE_PLACEHOLDER, "")):
                raise ValueError(f"argument {name!r}: the only placeholder is {MESSAGE_PLACEHOLDER}")
        return arguments

    def matches(self, text: str) -> bool:
        """True when the message has one of the keywords (as whole words, any case)."""
        return any(_has_word(text, k) for k in self.keywords)

    def arguments_for(self, text: str, limits: dict[str, int]) -> dict[str, str]:
        """The arguments with the message put in, each cut to its schema's ``maxLength`` (``limits``)."""
        message = " ".join(text.split())
        filled = {k: v.replace(MESSAGE_PLACEHOLDER, message) for k, v in self.arguments.items()}
        return {k: v[: limits[k]] if k in limits else v for k, v in filled.items()}


class SuggestRuleConfig(BaseModel):
    """Config of an automation rule of kind ``suggest``: the questions offered as options (buttons, or a
    list where there are more than 3) under a reply that could not answer, so the customer taps one of
    the things the brand can help with instead of guessing words. A tap sends the option's text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    options: tuple[str, ...] = Field(min_length=2, max_length=10)

    @field_validator("options")
    @classmethod
    def _labels(cls, options: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(" ".join(o.split()) for o in options)
        # 20 characters: the shortest button title of the channels (WhatsApp, Instagram), so no channel
        # cuts an option and a tap always sends back exactly the text offered.
        if any(not o or len(o) > 20 for o in cleaned):
            raise ValueError("each option must be 1 to 20 characters")
        if len({o.casefold() for o in cleaned}) != len(cleaned):
            raise ValueError("options must differ")
        return cleaned


class BrandRules(BaseModel):
    """A brand's automation rules, parsed; invalid rules are skipped (and logged), never fatal."""

    model_config = ConfigDict(frozen=True)

    escalate: tuple[tuple[str, EscalateRuleConfig], ...] = ()
    allowed_actions: tuple[str, ...] | None = None
    offers: tuple[tuple[str, OfferRuleConfig], ...] = ()
    suggestions: tuple[str, ...] = ()

    @classmethod
    def from_rows(cls, rows: Iterable[Any]) -> BrandRules:
        """Parse ``AutomationRule`` rows (already filtered to enabled and sorted by priority)."""
        escalate: list[tuple[str, EscalateRuleConfig]] = []
        allowed: list[str] | None = None
        offers: list[tuple[str, OfferRuleConfig]] = []
        suggestions: tuple[str, ...] = ()
        for row in rows:
            try:
                if row.kind == ESCALATE_RULE_KIND:
                    escalate.append((row.name, EscalateRuleConfig.model_validate(row.config)))
                elif row.kind == ACTIONS_RULE_KIND:
                    allowed = [*(allowed or []), *ActionsRuleConfig.model_validate(row.config).allowed]
                elif row.kind == OFFER_RULE_KIND:
                    offers.append((row.name, OfferRuleConfig.model_validate(row.config)))
                elif row.kind == SUGGEST_RULE_KIND and not suggestions:  # the first by priority
                    suggestions = SuggestRuleConfig.model_validate(row.config).options
            except ValidationError as exc:
                log.warning("automation_rule_invalid", rule=row.name, kind=row.kind, errors=exc.error_count())
        return cls(
            escalate=tuple(escalate),
            allowed_actions=tuple(allowed) if allowed is not None else None,
            offers=tuple(offers),
            suggestions=suggestions,
        )

    def offer(self, text: str) -> tuple[str, OfferRuleConfig] | None:
        """The first ``offer`` rule (in priority order) the message matches."""
        return next(((n, r) for n, r in self.offers if r.matches(text)), None)


#: The decision that carries a reply's suggested questions (its reason: their JSON list).
SUGGEST_RULE = "suggestions"


def suggestion(options: Sequence[str]) -> GuardrailDecision:
    """The decision that offers ``options`` under a reply (stored with it, so history shows them too)."""
    return GuardrailDecision(SUGGEST_RULE, "options", json.dumps(list(options), ensure_ascii=False))


def decision(trigger: str, reason: str) -> GuardrailDecision:
    """The recorded form of an escalation."""
    return GuardrailDecision(f"{RULE_PREFIX}{trigger}", "escalate", reason)


def input_trigger(
    *,
    text: str,
    customer_id: str,
    rules: BrandRules,
    settings: EscalationSettings,
    now: datetime | None = None,
) -> GuardrailDecision | None:
    """Escalation decided from the customer's message alone (before retrieval and generation)."""
    for name, rule in rules.escalate:
        if rule.matches(text=text, customer_id=customer_id, now=now or utcnow()):
            return decision("automation_rule", rule.reason or f"rule {name!r} matched")
    if wants_human(text):
        return decision("human_requested", "the customer asked for a person")
    score = sentiment(text)
    if score <= settings.negative_sentiment:
        return decision("negative_sentiment", f"sentiment={score:.2f}")
    return None


#: Guardrail outcomes that count as a failed bot answer.
FAILED_OUTCOMES = {("groundedness", "replace"), ("groundedness", "escalate"), ("actions", "fallback")}


def streaks(history_guardrails: Sequence[Sequence[dict[str, Any]]]) -> tuple[int, int]:
    """``(failed, no_knowledge)``: how many of the newest bot replies in a row failed / had no knowledge.

    ``history_guardrails`` holds the stored guardrail decisions of earlier bot replies, oldest first.
    """
    failed = no_knowledge = 0
    counting_failed = counting_none = True
    for decisions in reversed(history_guardrails):
        pairs = {(d.get("rule"), d.get("action")) for d in decisions}
        none = ("groundedness", "escalate") in pairs
        counting_failed = counting_failed and bool(pairs & FAILED_OUTCOMES)
        counting_none = counting_none and none
        failed += counting_failed
        no_knowledge += counting_none
        if not (counting_failed or counting_none):
            break
    return failed, no_knowledge


class AgentEvent(BaseModel):
    """One event on the ``agent-events`` stream (JSON in field ``data``), for agents' consoles."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["handoff", "agent_reply", "released", "taken_over"]
    conversation_id: uuid.UUID
    tenant_id: uuid.UUID
    brand_id: uuid.UUID
    channel: str
    customer_id: str
    trigger: str = ""
    reason: str = ""
    agent_id: str | None = None
    at: datetime = Field(default_factory=utcnow)


def _has_word(text: str, keyword: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(keyword.strip())}(?!\w)", text, re.IGNORECASE) is not None
