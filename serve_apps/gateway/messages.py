"""The platform API's message routes: answer a message, read a conversation, upload knowledge."""

from __future__ import annotations

import uuid

import structlog
from fastapi import APIRouter
from fastapi.responses import Response

from common.access.principal import Principal, Scope
from common.db import repositories as repo
from common.domain import InboundMessage, OutboundResponse
from common.errors import InvalidInput, NotFound
from common.logging import get_logger
from common.media_store import build_media_store
from common.observability import message_received
from common.schemas import (
    CitationOut,
    ConversationOut,
    GuardrailOut,
    InboundMessageIn,
    IngestResult,
    KnowledgeUploadIn,
    MessageOut,
    ReplyOut,
)
from serve_apps.gateway.auth import requires
from serve_apps.gateway.backend import GatewayBackend
from serve_apps.gateway.views import (
    conversation_fields,
    delivery_out,
    media_download,
    media_out,
    message_fields,
)

log = get_logger(__name__)

RESERVED_CUSTOMER_PREFIXES = ("anon:", "user:")  # web chat visitor ids; only the web chat routes mint them


def build_messages_router(backend: GatewayBackend) -> APIRouter:
    """``/v1/messages/inbound``, ``/v1/conversations/{id}``, ``/v1/brands/{id}/knowledge``.

    Every route needs a tenant key with its scope and sees only its tenant's brands and conversations.
    """
    router = APIRouter()
    media_store = build_media_store(backend.settings)  # one client for every download

    @router.post("/v1/messages/inbound", response_model=ReplyOut)
    async def inbound(body: InboundMessageIn, caller: Principal = requires(Scope.MESSAGES_WRITE)) -> ReplyOut:
        if body.customer_id.startswith(RESERVED_CUSTOMER_PREFIXES):
            # Those ids belong to web chat visitors; this API must not write into their conversations.
            raise InvalidInput(
                "customer_id prefix is reserved for web chat visitors",
                details={"reserved_prefixes": list(RESERVED_CUSTOMER_PREFIXES)},
            )
        if not caller.sees_brand(body.brand_id):
            raise repo.unknown_brand(body.brand_id)
        async with backend.sessionmaker() as session:
            await repo.require_brand(session, brand_id=body.brand_id, tenant_id=caller.tenant_id)
        with (
            structlog.contextvars.bound_contextvars(brand_id=str(body.brand_id), channel=str(body.channel)),
            message_received(),
        ):
            message = InboundMessage(
                brand_id=body.brand_id,
                channel=body.channel,
                customer_id=body.customer_id,
                text=body.text,
                provider_message_id=body.message_id or uuid.uuid4().hex,
            )
            reply = await backend.orchestrator.handle(message)
            log.info("message_answered", chars_in=len(body.text), chars_out=len(reply.text))
            return reply_out(reply)

    @router.get("/v1/conversations/{conversation_id}", response_model=ConversationOut)
    async def conversation(
        conversation_id: uuid.UUID, caller: Principal = requires(Scope.CONVERSATIONS_READ)
    ) -> ConversationOut:
        async with backend.sessionmaker() as session:
            found = await repo.get_conversation_with_messages(session, conversation_id=conversation_id)
            if (
                found is None
                or found[0].tenant_id != caller.tenant_id
                or not caller.sees_brand(found[0].brand_id)
            ):
                raise NotFound("unknown conversation", details={"conversation_id": str(conversation_id)})
            conv, messages = found
            deliveries = await repo.deliveries_for(session, message_ids=[m.id for m in messages])
            media = await repo.media_for(session, message_ids=[m.id for m in messages])
        return ConversationOut(
            **conversation_fields(conv),
            messages=[
                MessageOut(
                    **message_fields(m),
                    provider_message_id=m.provider_message_id,
                    delivery=delivery_out(deliveries.get(m.id)),
                    media=media_out(media.get(m.id), content_path="/v1/media"),
                )
                for m in messages
            ],
        )

    @router.get("/v1/media/{media_id}/content", response_class=Response)
    async def media_content(
        media_id: uuid.UUID, caller: Principal = requires(Scope.CONVERSATIONS_READ)
    ) -> Response:
        return await media_download(backend.sessionmaker, media_store, caller, media_id)

    @router.post("/v1/brands/{brand_id}/knowledge", response_model=IngestResult, status_code=201)
    async def knowledge(
        brand_id: uuid.UUID, body: KnowledgeUploadIn, caller: Principal = requires(Scope.KNOWLEDGE_WRITE)
    ) -> IngestResult:
        async with backend.sessionmaker() as session:
            brand = await repo.require_brand(session, brand_id=brand_id, tenant_id=caller.tenant_id)
        with structlog.contextvars.bound_contextvars(brand_id=str(brand_id)):
            result = await backend.knowledge.ingest(brand.tenant_id, brand.id, body)
            log.info("knowledge_ingested", documents=result.documents, written=result.chunks_written)
            return result

    return router


def reply_out(reply: OutboundResponse) -> ReplyOut:
    """HTTP view of a reply."""
    return ReplyOut(
        conversation_id=reply.conversation_id,
        message_id=reply.message_id,
        text=reply.text,
        citations=[
            CitationOut(chunk_id=c.chunk_id, source=c.source, heading_path=c.heading_path, score=c.score)
            for c in reply.citations
        ],
        guardrails=[GuardrailOut(rule=g.rule, action=g.action, reason=g.reason) for g in reply.guardrails],
        escalated=reply.escalated,
        duplicate=reply.duplicate,
    )
