"""The providers' customer-service windows: when a free-form reply may go out at all.

* **WhatsApp** (Cloud API): free-form messages only within 24 hours of the customer's last message;
  outside it the API refuses them (error 131047) and only an approved **template** may be sent. A reply
  outside the window goes out as the template its connection configured for that
  (``settings.window_template``: ``{name, language, parameters}``, the reply in the parameter that
  says ``{reply}``, by default the only one), or is
  **held**: recorded with the reason, shown to the agents, never sent and never dead-lettered.
* **Instagram**: free-form within 24 hours; a person's reply (``sender="agent"``) up to 7 days with the
  ``HUMAN_AGENT`` tag, as Meta documents it; beyond that held.
* Telegram and web chat have no window.

The window is measured from the newest inbound message of the conversation, as the provider does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.channels.base import REPLY_PLACEHOLDER
from common.domain import Channel

#: The channels whose providers limit when a free-form reply may go.
WINDOWED_CHANNELS = frozenset({Channel.WHATSAPP, Channel.INSTAGRAM})
WHATSAPP_WINDOW = timedelta(hours=24)
INSTAGRAM_WINDOW = timedelta(hours=24)
INSTAGRAM_HUMAN_AGENT_WINDOW = timedelta(days=7)
#: ``ChannelConfig.settings`` key of a WhatsApp connection's out-of-window template.
TEMPLATE_KEY = "window_template"
#: The connection's templates as last synced from WhatsApp (``POST /v1/channels/{id}/templates/sync``).
TEMPLATES_KEY = "templates"
TEMPLATES_SYNCED_KEY = "templates_synced_at"

Mode = Literal["open", "template", "human_agent", "held"]


#: The placeholder of the reply in a template's body parameters.
REPLY = REPLY_PLACEHOLDER


class WindowTemplate(BaseModel):
    """An approved WhatsApp template a reply goes out as: its body parameters in order, each a text in
    which ``{reply}`` is the reply (exactly one of them has it; the others are fixed texts, e.g. a
    department's name). The default, ``["{reply}"]``, is a template whose body has one parameter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9_]{1,512}$", description="As approved in WhatsApp Manager")
    language: str = Field(pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$", description="e.g. en_US")
    parameters: tuple[str, ...] = Field(
        default=(REPLY,),
        min_length=1,
        max_length=10,
        description="The body parameters {{1}}, {{2}}...: texts; {reply} in exactly one is the reply",
    )

    @field_validator("parameters")
    @classmethod
    def _one_reply(cls, parameters: tuple[str, ...]) -> tuple[str, ...]:
        if sum(REPLY in p for p in parameters) != 1 or any(p.count(REPLY) > 1 for p in parameters):
            raise ValueError("exactly one parameter holds {reply} (once)")
        if any(not p.strip() or len(p) > 1024 for p in parameters):
            raise ValueError("each parameter is 1 to 1024 characters")
        return parameters


def usable_templates(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Synced templates a reply can go out as: approved, with at least one body parameter (one holds the
    reply; ``parameters`` fills the others)."""
    synced = settings.get(TEMPLATES_KEY)
    candidates = synced if isinstance(synced, list) else []
    return [
        t
        for t in candidates
        if isinstance(t, dict)
        and t.get("status") == "APPROVED"
        and isinstance(t.get("body_parameters"), int)
        and t["body_parameters"] >= 1
    ]


def template_problem(settings: dict[str, Any], template: WindowTemplate) -> str | None:
    """Why ``template`` cannot carry a reply, judged by the last sync; None when it can, or when the
    templates were never synced (then only its shape is known, and WhatsApp decides)."""
    synced = settings.get(TEMPLATES_KEY)
    if not isinstance(synced, list):
        return None
    same = [
        t
        for t in synced
        if isinstance(t, dict) and t.get("name") == template.name and t.get("language") == template.language
    ]
    if not same:
        return f"template {template.name} ({template.language}) is not in the business account's templates"
    found = same[0]
    if found.get("status") != "APPROVED":
        return f"template {template.name} ({template.language}) is {found.get('status') or 'not approved'}"
    if found.get("body_parameters") != len(template.parameters):
        return (
            f"template {template.name} ({template.language}) has {found.get('body_parameters')} body "
            f"parameters and {len(template.parameters)} are given (parameters: one of them '{REPLY}')"
        )
    return None


@dataclass(frozen=True, slots=True)
class Decision:
    """How (and whether) a reply may be sent now."""

    mode: Mode
    reason: str = ""
    template: WindowTemplate | None = None


def decide(
    *,
    channel: Channel,
    sender: str,
    last_inbound_at: datetime | None,
    now: datetime,
    settings: dict[str, Any],
) -> Decision:
    """The decision for one reply (``last_inbound_at``: None when the customer never wrote)."""
    if channel not in WINDOWED_CHANNELS:
        return Decision("open")
    age = None if last_inbound_at is None else now - last_inbound_at
    if channel is Channel.WHATSAPP:
        if age is not None and age <= WHATSAPP_WINDOW:
            return Decision("open")
        raw = settings.get(TEMPLATE_KEY)
        if isinstance(raw, dict):
            try:
                template = WindowTemplate.model_validate(raw)
            except ValidationError:
                return Decision("held", "outside WhatsApp's 24-hour window and window_template is invalid")
            problem = template_problem(settings, template)
            if problem is not None:  # a template WhatsApp would refuse is held, not sent to be refused
                return Decision("held", f"outside WhatsApp's 24-hour window and {problem}")
            return Decision("template", template=template)
        return Decision(
            "held",
            "outside WhatsApp's 24-hour window and the connection has no window_template: "
            "the customer must write first, or configure an approved template",
        )
    if age is not None and age <= INSTAGRAM_WINDOW:
        return Decision("open")
    if sender == "agent" and age is not None and age <= INSTAGRAM_HUMAN_AGENT_WINDOW:
        return Decision("human_agent")
    limit = "7-day human agent" if sender == "agent" else "24-hour"
    return Decision("held", f"outside Instagram's {limit} window: the customer must write first")
