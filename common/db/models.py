"""SQLAlchemy 2.0 declarative models: the relational half of the system (the vectors live in Qdrant).

Conventions:

* every constraint and index has a deterministic name (``NAMING_CONVENTION``), so migrations can name them;
* enum-like columns are ``String`` plus a named ``CHECK`` constraint built from the :mod:`common.domain`
  enums, not PG enums: adding a channel is one ``ALTER TABLE ... CHECK``, not a type migration;
* JSON columns are JSONB on Postgres (``JSON`` elsewhere);
* ``tenant_id`` is denormalised onto brand-owned rows for tenant-scoped queries, and a composite foreign key
  ``(brand_id, tenant_id) -> brands(id, tenant_id)`` guarantees it always agrees with the brand's tenant;
* timestamps are timezone-aware with server defaults. ``message_logs`` and ``outbox_messages`` use
  ``clock_timestamp()`` rather than ``now()``: ``now()`` is frozen per transaction, so an inbound message
  and its reply written in one transaction would tie and could not be ordered.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from common.domain import Channel, ConversationState, Direction, Persona

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: JSONB on Postgres, plain JSON elsewhere.
JSONType: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")

INGESTION_STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed")


def _one_of(column: str, values: Iterable[str], name: str) -> CheckConstraint:
    """A named ``CHECK (column IN (...))``; ``name`` is expanded by the naming convention."""
    allowed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


def _enum_values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


def _brand_fk() -> ForeignKeyConstraint:
    """Composite FK that keeps the denormalised ``tenant_id`` equal to the brand's tenant."""
    return ForeignKeyConstraint(
        ["brand_id", "tenant_id"], ["brands.id", "brands.tenant_id"], ondelete="CASCADE"
    )


def _created_at(*, clock: bool = False) -> Mapped[datetime]:
    default = func.clock_timestamp() if clock else func.now()
    return mapped_column(DateTime(timezone=True), server_default=default, nullable=False)


def _updated_at() -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(Uuid, primary_key=True, default=uuid.uuid4)


class Base(DeclarativeBase):
    """Declarative base; its ``metadata`` is Alembic's ``target_metadata``."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Fetch server-generated values (created_at, updated_at) with RETURNING at flush time: under asyncio
    # an expired attribute cannot be lazy-loaded later.
    __mapper_args__ = {"eager_defaults": True}


class Tenant(Base):
    """A business using the platform."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = _uuid_pk()
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created_at()


class Brand(Base):
    """A brand of a tenant; the unit that owns knowledge, channels and conversations."""

    __tablename__ = "brands"
    __table_args__ = (
        UniqueConstraint("tenant_id", "slug"),
        # Target of the composite (brand_id, tenant_id) foreign keys.
        UniqueConstraint("id", "tenant_id"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    slug: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created_at()


class PersonaProfile(Base):
    """How a brand speaks now: one per brand, a copy of its current :class:`PersonaVersion` (``version``)."""

    __tablename__ = "persona_profiles"

    id: Mapped[uuid.UUID] = _uuid_pk()
    brand_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("brands.id", ondelete="CASCADE"), unique=True)
    tone: Mapped[str] = mapped_column(Text)
    languages: Mapped[list[str]] = mapped_column(JSONType)
    greeting: Mapped[str] = mapped_column(Text)
    sign_off: Mapped[str] = mapped_column(Text)
    avoid_topics: Mapped[list[str]] = mapped_column(JSONType)
    escalation_message: Mapped[str] = mapped_column(Text)
    fallback_message: Mapped[str] = mapped_column(Text)
    media_message: Mapped[str] = mapped_column(Text, default=Persona.media_message)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    updated_at: Mapped[datetime] = _updated_at()


class PersonaVersion(Base):
    """Every persona a brand has had, numbered from 1; a rollback is a new version equal to an old one."""

    __tablename__ = "persona_versions"
    __table_args__ = (UniqueConstraint("brand_id", "version"),)

    id: Mapped[uuid.UUID] = _uuid_pk()
    brand_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("brands.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    persona: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created_at()


class ChannelConfig(Base):
    """A channel connection: routes a provider account (phone number id, IG account, bot, widget token)
    to a brand, with its own credentials.

    ``credentials`` is a Fernet token (:mod:`common.crypto`) of the connection's secrets (access token,
    app secret, verify token, bot token, webhook secret token); None means the deployment's
    ``CHANNELS__*`` defaults apply (``make run``, single-connection deploys). ``app_id`` is the Meta app
    whose webhook URL (``/webhooks/meta/{app_id}``) delivers this account's messages.
    """

    __tablename__ = "channel_configs"
    __table_args__ = (
        UniqueConstraint("channel", "external_id"),
        _one_of("channel", _enum_values(Channel), "channel"),
        _brand_fk(),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    brand_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(256))
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    credentials: Mapped[str | None] = mapped_column(Text, default=None)
    app_id: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    created_at: Mapped[datetime] = _created_at()


class Conversation(Base):
    """One customer talking to one brand on one channel."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("brand_id", "channel", "customer_id"),
        _one_of("channel", _enum_values(Channel), "channel"),
        _one_of("state", _enum_values(ConversationState), "state"),
        _brand_fk(),
        Index("ix_conversations_brand_id_state", "brand_id", "state"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    brand_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    channel: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(
        String(16), default=ConversationState.BOT.value, server_default=ConversationState.BOT.value
    )
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class MessageLog(Base):
    """Every message in and out, with what the answer relied on (audit trail).

    ``(brand_id, channel, direction, provider_message_id)`` is unique: the idempotency key for inbound
    messages (NULL provider ids, usual for outbound, never collide). ``in_reply_to`` is unique among
    outbound rows: one bot reply per inbound message, even when two workers process it at once.
    """

    __tablename__ = "message_logs"
    __table_args__ = (
        UniqueConstraint("brand_id", "channel", "direction", "provider_message_id"),
        _one_of("channel", _enum_values(Channel), "channel"),
        _one_of("direction", _enum_values(Direction), "direction"),
        _brand_fk(),
        Index("ix_message_logs_conversation_id_created_at", "conversation_id", "created_at"),
        Index(
            "uq_message_logs_reply",
            "in_reply_to",
            unique=True,
            postgresql_where=text("in_reply_to IS NOT NULL AND direction = 'outbound'"),
        ),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    conversation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    brand_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    channel: Mapped[str] = mapped_column(String(32))
    direction: Mapped[str] = mapped_column(String(16))
    provider_message_id: Mapped[str | None] = mapped_column(String(256))
    in_reply_to: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    text: Mapped[str] = mapped_column(Text)
    citations: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    guardrails: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    prompt: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    llm_usage: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # The brand's persona version a bot reply was drafted with (None: inbound, agent replies).
    persona_version: Mapped[int | None] = mapped_column(Integer, default=None)
    # Inbound: when the customer sent it by the provider's clock (WhatsApp, Instagram); a webhook retried
    # for hours arrives late, and the customer-service window started at sending, not at ``created_at``.
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    created_at: Mapped[datetime] = _created_at(clock=True)


class KnowledgeSource(Base):
    """A document a brand gave us, identified by its ``uri`` within the brand."""

    __tablename__ = "knowledge_sources"
    __table_args__ = (UniqueConstraint("brand_id", "uri"), _brand_fk())

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    brand_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    uri: Mapped[str] = mapped_column(String(1024))
    title: Mapped[str] = mapped_column(Text, default="")
    content_type: Mapped[str] = mapped_column(String(100))
    content_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class KnowledgeChunk(Base):
    """One chunk of a source; ``id`` is the deterministic vector point id (same text → same id)."""

    __tablename__ = "knowledge_chunks"
    __table_args__ = (
        _brand_fk(),
        Index("ix_knowledge_chunks_source_id_ordinal", "source_id", "ordinal"),
        Index("ix_knowledge_chunks_brand_id_tenant_id", "brand_id", "tenant_id"),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    source_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("knowledge_sources.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    brand_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    ordinal: Mapped[int] = mapped_column(Integer)
    heading_path: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(128))


class AutomationRule(Base):
    """A brand-defined rule (keyword routing, business hours, ...) evaluated by ``priority`` ascending."""

    __tablename__ = "automation_rules"
    __table_args__ = (
        _brand_fk(),
        Index("ix_automation_rules_brand_id_priority", "brand_id", "priority"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    brand_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    priority: Mapped[int] = mapped_column(Integer, default=100, server_default=text("100"))


class IngestionJob(Base):
    """A knowledge ingestion run and what it did."""

    __tablename__ = "ingestion_jobs"
    __table_args__ = (
        _one_of("status", INGESTION_STATUSES, "status"),
        _brand_fk(),
        Index("ix_ingestion_jobs_brand_id_created_at", "brand_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    brand_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    status: Mapped[str] = mapped_column(String(16), default="queued", server_default="queued")
    source: Mapped[str] = mapped_column(Text, default="")
    counts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class OutboxMessage(Base):
    """Transactional outbox: an event written with the data it describes, published to a stream later."""

    __tablename__ = "outbox_messages"
    __table_args__ = (
        # Only unpublished rows are ever scanned; a partial index stays small however long the table grows.
        Index(
            "ix_outbox_messages_unpublished",
            "created_at",
            postgresql_where=text("published_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    stream: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _created_at(clock=True)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


MEDIA_STATUSES: tuple[str, ...] = (
    "pending",  # recorded with the message; the inbound worker fetches it before drafting
    "stored",  # its bytes are in media_contents (a location has none)
    "too_large",  # over MEDIA__MAX_BYTES (declared or counted while downloading): nothing stored
    "failed",  # the provider refused or could not be reached after the retries: nothing stored
)


class MessageMedia(Base):
    """A picture, voice note, video, file or location that came with one inbound message.

    Recorded ``pending`` in the transaction that stores the message (the webhook's acknowledgement never
    waits for a download); the inbound worker fetches it with the connection's credentials, then marks it
    ``stored`` with its bytes in :class:`MediaContent` in one transaction, or ``too_large`` / ``failed``
    with the reason shown to agents. Deleting the message (or its conversation) deletes both.
    """

    __tablename__ = "message_media"
    __table_args__ = (
        UniqueConstraint("message_id"),
        _one_of("status", MEDIA_STATUSES, "status"),
        _brand_fk(),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("message_logs.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    brand_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    channel: Mapped[str] = mapped_column(String(32))
    # The connection whose token fetches it; NULL once the connection is gone (the media then fails).
    connection_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("channel_configs.id", ondelete="SET NULL")
    )
    kind: Mapped[str] = mapped_column(String(16))
    voice: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    provider_ref: Mapped[str] = mapped_column(Text, default="")
    mime_type: Mapped[str | None] = mapped_column(String(200))
    filename: Mapped[str | None] = mapped_column(String(300))
    caption: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64))
    # Where the bytes are when they are in an S3-compatible bucket (``MEDIA__S3_BUCKET``); None: in
    # ``media_contents`` (or not stored).
    object_key: Mapped[str | None] = mapped_column(Text)
    transcript: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class MediaContent(Base):
    """The bytes of one stored media item, apart from its row so that listing media never reads them.

    ``bytea`` rather than a large object: it is deleted with its message by the cascade (a large object
    would outlive an erased conversation), and ``MEDIA__MAX_BYTES`` keeps it far below bytea's 1 GB.
    """

    __tablename__ = "media_contents"

    media_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("message_media.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)


DELIVERY_STATUSES: tuple[str, ...] = ("pending", "sent", "failed", "skipped", "held")
#: What the provider reported after accepting a message (status webhooks), in the order they happen.
RECEIPTS: tuple[str, ...] = ("sent", "delivered", "read", "failed")


class Delivery(Base):
    """Idempotency record of one outbound message's delivery to its provider (one row per message).

    A dispatcher claims the row (``pending``, lease in ``claimed_until``) before calling the provider and
    marks it ``sent`` once the provider accepted; a redelivered stream entry finds the row terminal and is
    only acknowledged. ``sending_since`` is set while a provider call may be in flight: found on an expired
    lease it means an earlier dispatcher crashed mid-send (see docs/DELIVERY.md).
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("message_id"),
        _one_of("status", DELIVERY_STATUSES, "status"),
        _one_of("channel", _enum_values(Channel), "channel"),
        _brand_fk(),
        Index("ix_deliveries_brand_id_status", "brand_id", "status"),
        Index("ix_deliveries_provider_message_id", "provider_message_id"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    message_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    brand_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    conversation_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    channel: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    provider_message_id: Mapped[str | None] = mapped_column(String(256))
    provider_message_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    parts_sent: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sending_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The provider's own receipts (WhatsApp status webhooks): never downgraded; failed with its reason.
    receipt: Mapped[str | None] = mapped_column(String(16))
    receipt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    receipt_error: Mapped[str | None] = mapped_column(Text)


ACTION_STATUSES: tuple[str, ...] = (
    "rejected",  # malformed, unknown, not allowed for the brand, or proposed in a tainted turn
    "pending_confirmation",  # side-effecting: waits for the customer's "yes"
    "declined",  # the customer did not confirm
    "running",  # claimed by one worker; the unique key stops a second execution
    "succeeded",
    "failed",
    "denied",  # authorization refused (e.g. another customer's order)
)


class ActionLog(Base):
    """Every action the LLM proposed and what became of it (audit trail of the action framework).

    ``(message_key, name)`` is unique: a message redelivered to two workers runs an action at most once.
    """

    __tablename__ = "action_logs"
    __table_args__ = (
        _one_of("status", ACTION_STATUSES, "status"),
        _brand_fk(),
        UniqueConstraint("message_key", "name"),
        Index("ix_action_logs_conversation_id_created_at", "conversation_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    brand_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    conversation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    # The inbound message's idempotency key (see common.conversation.actions.engine.message_key).
    message_key: Mapped[uuid.UUID] = mapped_column(Uuid)
    name: Mapped[str] = mapped_column(String(100))
    arguments: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _created_at(clock=True)
    updated_at: Mapped[datetime] = _updated_at()


class ApiKey(Base):
    """A tenant's API key: only its SHA-256 is stored; ``prefix`` is its public id (logs, audit, list).

    The token is ``ema_<prefix>_<secret>`` with 256 random bits of secret, so a fast hash is enough (as
    GitHub and Stripe do for their tokens): a slow password hash would only add latency to every call.
    """

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSONType)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created_at()


class AgentAccount(Base):
    """A person of a tenant who answers customers: signs in with a password (argon2id hash only).

    ``brand_ids`` limits the account to some brands (None: every brand of the tenant).
    """

    __tablename__ = "agent_accounts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "email"),
        _one_of("role", ("agent", "supervisor", "admin"), "role"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    brand_ids: Mapped[list[str] | None] = mapped_column(JSONType, default=None)
    password_hash: Mapped[str] = mapped_column(String(256))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()


class AgentSession(Base):
    """A signed-in agent: ``eas_<prefix>_<secret>`` token, only its SHA-256 stored (as API keys)."""

    __tablename__ = "agent_sessions"

    id: Mapped[uuid.UUID] = _uuid_pk()
    agent_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("agent_accounts.id", ondelete="CASCADE"), index=True
    )
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()


class AuditEntry(Base):
    """One management or agent action: who (``actor``), what, on which object, before and after.

    ``tenant_id`` is null only for operator actions outside any tenant. Rows are only ever inserted.
    """

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_tenant_id_at", "tenant_id", "at"),)

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    target_type: Mapped[str] = mapped_column(String(64))
    target_id: Mapped[str] = mapped_column(String(200))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    at: Mapped[datetime] = _created_at(clock=True)
