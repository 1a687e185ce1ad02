"""Domain objects shared by every layer.

They are ``pydantic`` dataclasses: plain dataclasses to the code that uses them, validated when built,
and safe to send across a Ray Serve deployment handle (pickled) or through FastAPI.
"""

from __future__ import annotations

import uuid
from dataclasses import field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import Field, SecretStr
from pydantic.dataclasses import dataclass


def utcnow() -> datetime:
    """Timezone-aware now; naive datetimes are never stored."""
    return datetime.now(UTC)


class Channel(StrEnum):
    """Where a customer talks to a brand."""

    WEBCHAT = "webchat"
    WHATSAPP = "whatsapp"
    INSTAGRAM = "instagram"
    TELEGRAM = "telegram"


class ConversationState(StrEnum):
    """Who owns the conversation right now."""

    BOT = "bot"
    HANDOFF = "handoff"  # a human owns it; the bot stays silent
    CLOSED = "closed"


class Direction(StrEnum):
    """Message direction relative to the brand."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


@dataclass(frozen=True)
class Tenant:
    """A business using the platform; owns one or more brands."""

    id: uuid.UUID
    slug: str
    name: str


@dataclass(frozen=True)
class Persona:
    """How a brand speaks."""

    tone: str = "friendly and concise"
    languages: tuple[str, ...] = ("en",)
    greeting: str = "Hi!"
    sign_off: str = ""
    avoid_topics: tuple[str, ...] = ()
    escalation_message: str = "Let me connect you with a member of our team."
    fallback_message: str = "I'm not sure about that one."
    #: Said for a picture, file or voice note the assistant cannot read (a person takes over).
    media_message: str = "I can only read text messages, so a member of our team will look at this."


@dataclass(frozen=True)
class BrandProfile:
    """A brand with its persona, as the orchestrator needs it."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    slug: str
    name: str
    persona: Persona = field(default_factory=Persona)
    #: Which version of the brand's persona this is (1, 2, ...; 0: none stored, the defaults).
    persona_version: int = 0


@dataclass(frozen=True)
class Accepted:
    """An inbound message made durable by ``accept`` (it crosses the orchestrator's handle)."""

    inbound_id: uuid.UUID
    conversation_id: uuid.UUID
    duplicate: bool


#: Names of the secrets a channel connection may hold (encrypted together, see :mod:`common.crypto`).
CREDENTIAL_NAMES = ("access_token", "app_secret", "verify_token", "bot_token", "secret_token")


@dataclass(frozen=True)
class ChannelRoute:
    """A channel connection as webhooks and senders use it: which brand a provider account (phone number
    id, IG account, bot, widget token) belongs to, and its decrypted credentials.

    ``credentials`` is None for a connection on the deployment's ``CHANNELS__*`` defaults; its values are
    :class:`SecretStr`, so the route can be logged or shown in an error without leaking them.
    """

    brand_id: uuid.UUID
    enabled: bool
    settings: dict[str, Any] = field(default_factory=dict)
    id: uuid.UUID | None = None
    tenant_id: uuid.UUID | None = None
    channel: Channel | None = None
    external_id: str = ""
    app_id: str | None = None
    credentials: dict[str, SecretStr] | None = None

    def secret(self, name: str) -> str | None:
        """The connection's own secret ``name``, or None when it has none (defaults apply)."""
        value = (self.credentials or {}).get(name)
        return value.get_secret_value() if value is not None else None

    def secret_or(self, name: str, default: SecretStr | None) -> str | None:
        """The connection's own secret ``name``, else the deployment's ``default`` (only for a connection
        that has no credentials at all: one with its own never falls back); None when neither is there."""
        if self.credentials is not None:
            return self.secret(name)
        return default.get_secret_value() if default is not None else None


#: Media kinds a channel adapter reads (fetched and stored; audio is transcribed when configured).
MEDIA_KINDS = ("image", "audio", "video", "document", "location")


@dataclass(frozen=True)
class MediaRef:
    """A picture, voice note, video, file or location a customer sent, as the provider names it.

    ``ref`` is what fetches the bytes: the WhatsApp media id, the Telegram ``file_id``, the Instagram
    attachment URL; empty for a location (nothing to fetch: ``details`` holds its coordinates).
    ``connection_id`` is the channel connection whose credentials fetch it (set by the webhook route).
    """

    kind: str = Field(pattern="^(image|audio|video|document|location)$")
    ref: str = Field(default="", max_length=2048)
    mime_type: str | None = Field(default=None, max_length=200)
    filename: str | None = Field(default=None, max_length=300)
    declared_bytes: int | None = None
    voice: bool = False  # a voice note (recorded in the app), not a music or audio file
    caption: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    connection_id: uuid.UUID | None = None


@dataclass(frozen=True)
class InboundMessage:
    """One customer message, normalised from any channel."""

    brand_id: uuid.UUID
    channel: Channel
    customer_id: str = Field(min_length=1, max_length=256)
    text: str = Field(min_length=1)
    provider_message_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=256)
    received_at: datetime = field(default_factory=utcnow)
    #: When the customer sent it by the provider's clock (WhatsApp, Instagram webhooks); None: unknown.
    sent_at: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    #: What came with (or instead of) the text; ``text`` is then the caption or a placeholder.
    media: MediaRef | None = None


@dataclass(frozen=True)
class Citation:
    """A knowledge chunk an answer relied on."""

    chunk_id: str
    source: str
    heading_path: str
    score: float


@dataclass(frozen=True)
class GuardrailDecision:
    """What one guardrail rule decided about one reply."""

    rule: str
    action: str  # "pass" | "replace" | "mask" | "escalate" | "block"
    reason: str = ""


@dataclass(frozen=True)
class OutboundResponse:
    """The reply the system will send for one inbound message."""

    conversation_id: uuid.UUID
    message_id: uuid.UUID
    brand_id: uuid.UUID
    channel: Channel
    customer_id: str
    text: str
    in_reply_to: str
    citations: tuple[Citation, ...] = ()
    guardrails: tuple[GuardrailDecision, ...] = ()
    escalated: bool = False
    duplicate: bool = False  # True when this inbound message was already answered


@dataclass(frozen=True)
class KnowledgeAsset:
    """A document a brand gave us, before parsing."""

    tenant_id: uuid.UUID
    brand_id: uuid.UUID
    uri: str
    content: bytes
    content_type: str = "text/markdown"
    title: str = ""


@dataclass(frozen=True)
class ActionRequest:
    """An action the LLM asked for; validated before anything runs."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
