"""What the HTTP layer needs from the rest of the system, typed so a call can be followed across it.

In process (tests, :mod:`serve_apps.single_process`) the attributes are the objects themselves
(:class:`~common.conversation.orchestrator.MessageOrchestrator`,
:class:`~common.knowledge.service.KnowledgeService`); in the Serve gateway they are
:class:`~deployments.proxy.HandleProxy` objects over deployment handles with the same async methods.
mypy checks the in-process objects against these Protocols; ``tests/unit/gateway/test_gateway_backend.py``
checks that the Serve deployments expose every method they name.
"""

from __future__ import annotations

import uuid
from typing import Protocol

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.config import Settings
from common.conversation.agents import AgentFile
from common.domain import (
    Accepted,
    Channel,
    ChannelRoute,
    ConversationState,
    InboundMessage,
    OutboundResponse,
)
from common.schemas import IngestResult, KnowledgeUploadIn, RetrievedChunk


class Intake(Protocol):
    """Store an inbound message and queue it for drafting (what webhooks and web chat wait for)."""

    async def accept(self, message: InboundMessage) -> Accepted: ...

    async def channel_route(self, channel: Channel, external_id: str) -> ChannelRoute | None: ...

    async def connection_route(self, connection_id: uuid.UUID) -> ChannelRoute | None: ...

    async def app_routes(self, app_id: str) -> tuple[ChannelRoute, ...]: ...

    async def forget_routes(self) -> None: ...


class Conversations(Intake, Protocol):
    """The orchestrator: draft replies, and the agent operations on a conversation."""

    async def handle(self, message: InboundMessage) -> OutboundResponse: ...

    async def process_stored(self, inbound_id: uuid.UUID) -> OutboundResponse: ...

    async def agent_reply(self, conversation_id: uuid.UUID, text: str, agent_id: str) -> OutboundResponse: ...

    async def agent_attachment(
        self, conversation_id: uuid.UUID, file: AgentFile, agent_id: str
    ) -> OutboundResponse: ...

    async def take_over(self, conversation_id: uuid.UUID, agent_id: str) -> ConversationState: ...

    async def release(self, conversation_id: uuid.UUID, agent_id: str) -> ConversationState: ...


class KnowledgeIndex(Protocol):
    """The brand knowledge index (synchronous uploads; bulk jobs go through the ingestion stream)."""

    async def ingest(
        self, tenant_id: uuid.UUID, brand_id: uuid.UUID, upload: KnowledgeUploadIn
    ) -> IngestResult: ...

    async def retrieve(
        self, tenant_id: uuid.UUID, brand_id: uuid.UUID, query: str, top_k: int
    ) -> list[RetrievedChunk]: ...

    async def delete_source(self, tenant_id: uuid.UUID, brand_id: uuid.UUID, source_id: uuid.UUID) -> int: ...


class GatewayBackend(Protocol):
    """What the gateway app and every route group mounted on it use."""

    # Read-only members (properties), so a backend may hold a subtype: the orchestrator itself, or a
    # handle proxy typed as the Protocol.
    @property
    def settings(self) -> Settings: ...

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]: ...

    @property
    def redis(self) -> aioredis.Redis: ...

    @property
    def orchestrator(self) -> Conversations: ...

    @property
    def knowledge(self) -> KnowledgeIndex: ...

    @property
    def intake(self) -> Intake:
        """Runs ``accept`` (store + queue) in the gateway's own process, for webhooks and web chat."""
        ...

    async def ready(self) -> dict[str, bool]:
        """Dependency checks for the readiness probe."""
        ...
