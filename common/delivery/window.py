"""The providers' customer-service windows: when a free-form reply may go out at all.

* **WhatsApp** (Cloud API): free-form messages only within 24 hours of the customer's last message;
  outside it the API refuses them (error 131047) and only an approved **template** may be sent. A reply
  outside the window goes out as the template its connection configured for that
  (``settings.window_template``: ``{name, language}``, the reply as its one body parameter), or is
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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.domain import Channel

#: The channels whose providers limit when a free-form reply may go.
WINDOWED_CHANNELS = frozenset({Channel.WHATSAPP, Channel.INSTAGRAM})
WHATSAPP_WINDOW = timedelta(hours=24)
INSTAGRAM_WINDOW = timedelta(hours=24)
INSTAGRAM_HUMAN_AGENT_WINDOW = timedelta(days=7)
#: ``ChannelConfig.settings`` key of a WhatsApp connection's out-of-window template.
TEMPLATE_KEY = "window_template"

Mode = Literal["open", "template", "human_agent", "held"]


class WindowTemplate(BaseModel):
    """An approved WhatsApp template whose body has one parameter: the reply."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9_]{1,512}$", description="As approved in WhatsApp Manager")
    language: str = Field(pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$", description="e.g. en_US")


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
                return Decision("template", template=WindowTemplate.model_validate(raw))
            except ValidationError:
                return Decision("held", "outside WhatsApp's 24-hour window and window_template is invalid")
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
