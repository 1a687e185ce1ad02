"""Pydantic contracts that cross a boundary: HTTP bodies and Ray Serve deployment-handle calls.

No ``dict[str, Any]`` crosses a deployment handle; these models do.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.domain import Channel, ConversationState, Direction


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- HTTP: messages -------------------------------------------------------------------------------


class InboundMessageIn(_Strict):
    """``POST /v1/messages/inbound`` body (web chat and direct API callers)."""

    brand_id: uuid.UUID
    customer_id: str = Field(min_length=1, max_length=256)
    text: str = Field(min_length=1)
    channel: Channel = Channel.WEBCHAT
    message_id: str | None = Field(
        default=None, min_length=1, max_length=256, description="Client id; the idempotency key"
    )


class CitationOut(_Strict):
    """A chunk the answer relied on."""

    chunk_id: str
    source: str
    heading_path: str
    score: float


class GuardrailOut(_Strict):
    """One guardrail decision."""

    rule: str
    action: str
    reason: str


class ReplyOut(_Strict):
    """Answer to ``POST /v1/messages/inbound``."""

    conversation_id: uuid.UUID
    message_id: uuid.UUID
    text: str
    citations: list[CitationOut]
    guardrails: list[GuardrailOut]
    escalated: bool
    duplicate: bool


class DeliveryOut(_Strict):
    """How a reply fared: our side (``status``: pending/sent/failed/skipped) and the provider's receipts
    (``receipt``: sent/delivered/read/failed, with its reason in ``error``)."""

    status: str
    receipt: str | None
    receipt_at: datetime | None
    error: str | None


class MediaOut(_Strict):
    """What a customer sent besides text: fetched (``stored``), refused (``too_large``), ``failed`` or
    still ``pending``; ``content_url`` downloads the bytes (None when none are stored)."""

    id: uuid.UUID
    kind: str
    voice: bool
    status: str
    mime_type: str | None
    filename: str | None
    size_bytes: int | None
    sha256: str | None
    error: str | None
    transcript: str | None
    details: dict[str, Any] = Field(default_factory=dict)
    content_url: str | None = None


class MessageOut(_Strict):
    """One logged message in a conversation."""

    id: uuid.UUID
    direction: Direction
    text: str
    created_at: datetime
    provider_message_id: str | None
    citations: list[CitationOut] = Field(default_factory=list)
    guardrails: list[GuardrailOut] = Field(default_factory=list)
    delivery: DeliveryOut | None = None
    media: MediaOut | None = None


class ConversationOut(_Strict):
    """``GET /v1/conversations/{id}``."""

    id: uuid.UUID
    brand_id: uuid.UUID
    channel: Channel
    customer_id: str
    state: ConversationState
    messages: list[MessageOut]


# --- HTTP: knowledge ------------------------------------------------------------------------------


class KnowledgeDocumentIn(_Strict):
    """One document in a JSON knowledge upload."""

    uri: str = Field(min_length=1, max_length=1024, description="Stable id of the source (path, URL)")
    content: str
    content_type: Literal["text/markdown", "text/plain", "text/html", "text/csv"] = "text/markdown"
    title: str = ""


class KnowledgeUploadIn(_Strict):
    """``POST /v1/brands/{brand_id}/knowledge`` JSON body."""

    documents: list[KnowledgeDocumentIn] = Field(min_length=1, max_length=500)


class IngestResult(_Strict):
    """What one ingestion did, counted exactly."""

    documents: int
    chunks_written: int
    chunks_unchanged: int
    chunks_deleted: int
    chunk_ids: list[str]


# --- deployment handles ---------------------------------------------------------------------------


class ChunkRecord(_Strict):
    """A chunk ready to be embedded and stored; ``chunk_id`` is deterministic (see vectorstore)."""

    chunk_id: str
    tenant_id: uuid.UUID
    brand_id: uuid.UUID
    source: str
    heading_path: str
    ordinal: int
    text: str
    content_hash: str


class RetrievedChunk(_Strict):
    """A chunk returned by retrieval, with what an answer needs to cite it."""

    chunk_id: str
    text: str
    source: str
    heading_path: str
    score: float


class ChatMessage(_Strict):
    """One message of a chat prompt (OpenAI roles)."""

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Strict):
    """A chat completion request to the LLM deployment."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)


class ChatResponse(_Strict):
    """A chat completion with usage and latency, whatever the backend."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    finish_reason: str | None = None


# --- streams --------------------------------------------------------------------------------------


class LinkButton(_Strict):
    """A button that opens a web page: a citation whose source is a public URL."""

    title: str = Field(min_length=1, max_length=80, description="Cut to each channel's limit when sent")
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000)


class OutboundAttachment(_Strict):
    """A file a person sends with a message (its bytes stay in the media store, under ``media_id``)."""

    media_id: uuid.UUID
    kind: Literal["image", "document"]
    mime_type: str = Field(max_length=200)
    filename: str = Field(max_length=300)
    caption: str = Field(default="", max_length=1024)


class OutboundPayload(_Strict):
    """One reply on the ``outbound`` stream: everything a channel dispatcher needs to deliver it.

    ``message_id`` (the outbound message log id) is the delivery idempotency key.
    """

    message_id: uuid.UUID
    conversation_id: uuid.UUID
    tenant_id: uuid.UUID
    brand_id: uuid.UUID
    channel: Channel
    customer_id: str
    in_reply_to: str | None = None
    text: str
    sender: Literal["bot", "agent"] = Field(
        default="bot", description="bot replies are dropped at send time when a human owns the conversation"
    )
    quick_replies: list[str] = Field(
        default_factory=list,
        max_length=10,
        description="Options under the last part (an action's yes/no, a brand's suggested questions): up "
        "to 3 are buttons, more a list where the channel has one; a tap comes back as that text",
    )
    handoff: bool = Field(
        default=False,
        description="The bot's message that hands the conversation to a person (written with the state "
        "change): sent although a person now owns the conversation; other bot replies then are not",
    )
    attachment: OutboundAttachment | None = Field(
        default=None, description="An agent's file: sent as one image or document message with its caption"
    )
    links: list[LinkButton] = Field(
        default_factory=list,
        max_length=3,
        description="The cited pages that have a public URL, as buttons that open them (no reply comes back)",
    )
    trace: dict[str, str] | None = Field(
        default=None, description="W3C trace context (traceparent, baggage) the dispatcher continues"
    )


class InboundQueued(_Strict):
    """One stored inbound message on the ``inbound`` stream, waiting for ``process_stored``."""

    inbound_id: uuid.UUID
    brand_id: uuid.UUID
    trace: dict[str, str] | None = Field(
        default=None, description="W3C trace context (traceparent, baggage) the inbound worker continues"
    )
