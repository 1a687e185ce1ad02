"""HTTP bodies of the web chat API and the widget's display settings (``channel_configs.settings``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_COLOR = r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WidgetDisplay(BaseModel):
    """Display options of one widget, stored in its ``ChannelConfig.settings``.

    Unknown keys are ignored so other parts of the system can keep their own settings beside these.
    Colors are validated hex values because they end up in CSS.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    title: str | None = Field(default=None, max_length=100, description="Header text; default: brand name")
    greeting: str | None = Field(default=None, max_length=500, description="Overrides persona.greeting")
    primary_color: str = Field(default="#1f6feb", pattern=_COLOR)
    primary_text_color: str = Field(default="#ffffff", pattern=_COLOR)
    position: Literal["right", "left"] = "right"
    launcher_label: str = Field(default="Chat with us", max_length=60)
    placeholder: str = Field(default="Type your question…", max_length=100)
    allowed_origins: list[str] = Field(
        default_factory=list, description="Origins allowed to embed the widget; empty = any"
    )
    require_identity: bool = Field(default=False, description="Refuse anonymous visitors")


class WidgetConfigOut(_Strict):
    """``GET /v1/webchat/{token}/config``: what the widget needs to draw itself."""

    brand_name: str
    title: str
    greeting: str
    primary_color: str
    primary_text_color: str
    position: Literal["right", "left"]
    launcher_label: str
    placeholder: str
    require_identity: bool
    #: The brand's suggested questions (its ``suggest`` rule), offered under the greeting: one tap asks.
    suggestions: list[str] = Field(default_factory=list)


class WebchatMessageIn(_Strict):
    """``POST /v1/webchat/{token}/messages``; ``client_message_id`` is the idempotency key."""

    visitor_id: str | None = Field(default=None, min_length=1, max_length=128)
    identity: str | None = Field(default=None, min_length=1, max_length=1024)
    text: str = Field(min_length=1)
    client_message_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")


class WebchatAcceptedOut(_Strict):
    """202 answer: the stored inbound message; the reply arrives on the event stream."""

    message_id: uuid.UUID
    conversation_id: uuid.UUID
    duplicate: bool


class WebchatCitationOut(_Strict):
    """A source the answer used, as the widget shows it (source, then heading path)."""

    source: str
    heading_path: str


class WebchatAttachmentOut(_Strict):
    """A file a person sent with a message; the widget links ``GET /v1/webchat/{token}/media/{id}``."""

    id: uuid.UUID
    kind: str
    filename: str
    mime_type: str
    size_bytes: int | None = None


class WebchatMessageOut(_Strict):
    """One message as history and SSE ``message`` events carry it."""

    id: uuid.UUID
    role: Literal["visitor", "assistant"]
    text: str
    created_at: datetime
    citations: list[WebchatCitationOut] = Field(default_factory=list)
    #: Tap one and its text is sent as the visitor's answer (an action's "Yes" / "No" confirmation).
    buttons: list[str] = Field(default_factory=list)
    attachment: WebchatAttachmentOut | None = None


class WebchatHistoryOut(_Strict):
    """``GET /v1/webchat/{token}/history``: the visitor's conversation, oldest first."""

    conversation_id: uuid.UUID | None
    messages: list[WebchatMessageOut]
