"""The message pipeline: one inbound message in, one grounded reply out.

Two entry points share the same drafting and storing code:

* :meth:`MessageOrchestrator.handle` (synchronous API, web chat): validate → brand → duplicate check →
  conversation → retrieve (tenant+brand filtered) → persona prompt → LLM → groundedness guardrail → one
  transaction {inbound log, outbound log, outbox row} → publish to the outbound stream → mark published.
* :meth:`MessageOrchestrator.accept` + :meth:`MessageOrchestrator.process_stored` (webhooks): the
  inbound message is committed with an outbox row for the ``inbound`` stream *before* the provider gets
  its 200; a worker then drafts and stores the reply. One reply per inbound message is enforced by a
  unique index, so redeliveries and racing workers never produce a second answer.

Dependencies are injected as plain callables so the same code runs inside the Ray Serve orchestrator
deployment (callables wrap deployment handles) and in-process (tests, the no-Serve baseline benchmark).
A failed publish never fails the reply: the outbox row stays unpublished and the relay sends it later.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common import guardrails, prompting
from common.config import Settings
from common.db import repositories as repo
from common.domain import (
    BrandProfile,
    Channel,
    Citation,
    ConversationState,
    Direction,
    GuardrailDecision,
    InboundMessage,
    OutboundResponse,
)
from common.errors import NotFound, PayloadTooLarge, StreamUnavailable
from common.logging import get_logger
from common.schemas import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    InboundQueued,
    OutboundPayload,
    RetrievedChunk,
)
from common.streams import INBOUND_STREAM, OUTBOUND_STREAM, StreamPublisher

log = get_logger(__name__)

RetrieveFn = Callable[[uuid.UUID, uuid.UUID, str, int], Awaitable[list[RetrievedChunk]]]
ChatFn = Callable[[ChatRequest], Awaitable[ChatResponse]]

HISTORY_TURNS = 10
HISTORY_BUDGET_TOKENS = 600


@dataclass(frozen=True)
class Accepted:
    """An inbound message made durable by :meth:`MessageOrchestrator.accept`."""

    inbound_id: uuid.UUID
    conversation_id: uuid.UUID
    duplicate: bool


@dataclass(frozen=True)
class _Draft:
    """The reply before it is stored."""

    text: str
    citations: list[Citation]
    decisions: list[GuardrailDecision]
    prompt: list[ChatMessage] | None
    usage: ChatResponse | None
    escalated: bool


class MessageOrchestrator:
    """Answers inbound messages; stateless apart from its injected clients."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        retrieve: RetrieveFn,
        chat: ChatFn,
        publisher: StreamPublisher | None,
    ) -> None:
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._retrieve = retrieve
        self._chat = chat
        self._publisher = publisher

    async def handle(self, message: InboundMessage) -> OutboundResponse:
        """Answer one message now (synchronous API); a repeated message id returns the stored reply.

        Inbound log, reply and outbox row are written in one transaction after generation.
        """
        self._check_size(message)
        async with self._sessionmaker() as session:
            brand = await self._brand(session, message.brand_id)
            previous = await self._stored_reply(session, message)
            if previous is not None:
                return previous
            conversation = await self._conversation(session, brand, message)
            history = await repo.recent_messages(
                session, conversation_id=conversation.id, limit=HISTORY_TURNS
            )
            await session.commit()
            conversation_id = conversation.id
            state = ConversationState(conversation.state)

        draft = await self._draft(brand, message, [_as_chat(m) for m in history], state)
        return await self._store_and_publish(brand, message, conversation_id, draft)

    async def accept(self, message: InboundMessage) -> Accepted:
        """Make an inbound message durable and queue it for :meth:`process_stored` (webhook path).

        Returns once the message is committed, so a webhook can acknowledge it; a redelivery of the same
        provider message id is recognised atomically and queues nothing.
        """
        self._check_size(message)
        async with self._sessionmaker() as session:
            brand = await self._brand(session, message.brand_id)
            conversation = await self._conversation(session, brand, message)
            inbound = await repo.insert_inbound(session, conversation=conversation, message=message)
            if inbound is None:
                await session.rollback()
                existing = await repo.find_inbound(
                    session,
                    brand_id=message.brand_id,
                    channel=message.channel,
                    provider_message_id=message.provider_message_id,
                )
                if existing is None:  # pragma: no cover - the unique key said it exists
                    raise StreamUnavailable("inbound message vanished during deduplication; retry")
                return Accepted(existing.id, existing.conversation_id, duplicate=True)
            payload = InboundQueued(inbound_id=inbound.id, brand_id=brand.id).model_dump(mode="json")
            outbox = await repo.add_outbox(session, stream=INBOUND_STREAM, payload=payload)
            await session.commit()
            accepted = Accepted(inbound.id, conversation.id, duplicate=False)
            outbox_id = outbox.id
        await self._publish(outbox_id, INBOUND_STREAM, payload)
        return accepted

    async def process_stored(self, inbound_id: uuid.UUID) -> OutboundResponse:
        """Answer a message stored by :meth:`accept`; idempotent (a second call returns the first reply)."""
        async with self._sessionmaker() as session:
            inbound = await repo.get_message(session, message_id=inbound_id)
            if inbound is None or inbound.direction != Direction.INBOUND:
                raise NotFound("unknown inbound message", details={"inbound_id": str(inbound_id)})
            conversation = await repo.get_conversation(session, conversation_id=inbound.conversation_id)
            brand = await self._brand(session, inbound.brand_id)
            message = InboundMessage(
                brand_id=inbound.brand_id,
                channel=Channel(inbound.channel),
                customer_id=conversation.customer_id,
                text=inbound.text,
                provider_message_id=inbound.provider_message_id or str(inbound.id),
            )
            reply = await repo.find_reply_to(session, inbound_id=inbound.id)
            if reply is not None:
                return _response_from_log(message, reply, duplicate=True)
            history = await repo.recent_messages(
                session, conversation_id=conversation.id, limit=HISTORY_TURNS + 1
            )
            state = ConversationState(conversation.state)
        earlier = [_as_chat(m) for m in history if m.id != inbound.id]
        draft = await self._draft(brand, message, earlier, state)
        return await self._store_reply(brand, message, conversation, inbound.id, draft)

    def _check_size(self, message: InboundMessage) -> None:
        if len(message.text) > self._settings.max_message_chars:
            raise PayloadTooLarge(
                "message text is too long",
                details={"max_chars": self._settings.max_message_chars, "chars": len(message.text)},
            )

    @staticmethod
    async def _brand(session: AsyncSession, brand_id: uuid.UUID) -> BrandProfile:
        brand = await repo.get_brand_profile(session, brand_id=brand_id)
        if brand is None:
            raise NotFound("unknown brand", details={"brand_id": str(brand_id)})
        return brand

    @staticmethod
    async def _conversation(session: AsyncSession, brand: BrandProfile, message: InboundMessage) -> Any:
        return await repo.get_or_create_conversation(
            session,
            tenant_id=brand.tenant_id,
            brand_id=brand.id,
            channel=message.channel,
            customer_id=message.customer_id,
        )

    async def _stored_reply(self, session: AsyncSession, message: InboundMessage) -> OutboundResponse | None:
        inbound = await repo.find_inbound(
            session,
            brand_id=message.brand_id,
            channel=message.channel,
            provider_message_id=message.provider_message_id,
        )
        if inbound is None:
            return None
        reply = await repo.find_reply_to(session, inbound_id=inbound.id)
        if reply is None:
            return None
        return _response_from_log(message, reply, duplicate=True)

    async def _draft(
        self,
        brand: BrandProfile,
        message: InboundMessage,
        history: list[ChatMessage],
        state: ConversationState,
    ) -> _Draft:
        if state is not ConversationState.BOT:
            # A human owns the conversation: log the message, say nothing.
            decision = GuardrailDecision(rule="ownership", action="block", reason=f"conversation is {state}")
            return _Draft("", [], [decision], None, None, escalated=state is ConversationState.HANDOFF)
        top_k = self._settings.retrieval.top_k
        started = time.perf_counter()
        chunks = await self._retrieve(brand.tenant_id, brand.id, message.text, top_k)
        relevant = [c for c in chunks if c.score >= self._settings.retrieval.min_score]
        log.info(
            "retrieved",
            chunks=len(chunks),
            relevant=len(relevant),
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        prompt: list[ChatMessage] | None = None
        usage: ChatResponse | None = None
        answer = ""
        if relevant:
            prompt = prompting.build_messages(
                brand=brand,
                question=message.text,
                context=relevant,
                history=history,
                history_budget_tokens=HISTORY_BUDGET_TOKENS,
            )
            usage = await self._chat(ChatRequest(messages=prompt))
            answer = usage.text
        final = guardrails.finalize_answer(
            answer=answer,
            context=relevant,
            persona=brand.persona,
            min_support=guardrails.DEFAULT_MIN_SUPPORT,
        )
        escalated = any(d.action == "escalate" for d in final.decisions)
        return _Draft(final.text, list(final.citations), list(final.decisions), prompt, usage, escalated)

    async def _store_and_publish(
        self,
        brand: BrandProfile,
        message: InboundMessage,
        conversation_id: uuid.UUID,
        draft: _Draft,
    ) -> OutboundResponse:
        async with self._sessionmaker() as session:
            conversation = await self._conversation(session, brand, message)
            inbound = await repo.insert_inbound(session, conversation=conversation, message=message)
            if inbound is None:
                # A concurrent delivery of the same message won the race: answer with its reply.
                await session.rollback()
                stored = await self._stored_reply(session, message)
                if stored is None:
                    raise StreamUnavailable("duplicate message is still being answered; retry shortly")
                return stored
            written = await self._write_reply(session, brand, message, conversation, inbound.id, draft)
            if written is None:  # pragma: no cover - the inbound row was created in this transaction
                raise StreamUnavailable("reply already recorded for a new inbound message")
            await session.commit()
        response, outbox_id, payload = written
        if outbox_id is not None:
            await self._publish(outbox_id, OUTBOUND_STREAM, payload)
        return response

    async def _store_reply(
        self,
        brand: BrandProfile,
        message: InboundMessage,
        conversation: Any,
        inbound_id: uuid.UUID,
        draft: _Draft,
    ) -> OutboundResponse:
        async with self._sessionmaker() as session:
            written = await self._write_reply(session, brand, message, conversation, inbound_id, draft)
            if written is None:
                # Another worker answered this message first; its reply stands, ours is dropped.
                await session.rollback()
                reply = await repo.find_reply_to(session, inbound_id=inbound_id)
                if reply is None:  # pragma: no cover - the unique index said it exists
                    raise StreamUnavailable("reply vanished during deduplication; retry")
                return _response_from_log(message, reply, duplicate=True)
            await session.commit()
        response, outbox_id, payload = written
        if outbox_id is not None:
            await self._publish(outbox_id, OUTBOUND_STREAM, payload)
        return response

    async def _write_reply(
        self,
        session: AsyncSession,
        brand: BrandProfile,
        message: InboundMessage,
        conversation: Any,
        inbound_id: uuid.UUID,
        draft: _Draft,
    ) -> tuple[OutboundResponse, uuid.UUID | None, dict[str, Any]] | None:
        """Reply log row and, when there is something to send, its outbox row (caller commits)."""
        outbound = await repo.insert_outbound(
            session,
            conversation=conversation,
            in_reply_to=inbound_id,
            text=draft.text,
            citations=[asdict(c) for c in draft.citations],
            guardrails=[asdict(d) for d in draft.decisions],
            prompt=[m.model_dump() for m in draft.prompt] if draft.prompt else None,
            llm_usage=_usage(draft.usage),
        )
        if outbound is None:
            return None
        response = OutboundResponse(
            conversation_id=conversation.id,
            message_id=outbound.id,
            brand_id=brand.id,
            channel=message.channel,
            customer_id=message.customer_id,
            text=draft.text,
            in_reply_to=message.provider_message_id,
            citations=tuple(draft.citations),
            guardrails=tuple(draft.decisions),
            escalated=draft.escalated,
        )
        payload = outbound_payload(brand, response)
        if not draft.text:
            return response, None, payload
        outbox = await repo.add_outbox(session, stream=OUTBOUND_STREAM, payload=payload)
        return response, outbox.id, payload

    async def _publish(self, outbox_id: uuid.UUID, stream: str, payload: dict[str, Any]) -> None:
        """Best effort: on failure the outbox row stays unpublished and the relay sends it later."""
        if self._publisher is None:
            return
        try:
            await self._publisher.publish(stream, payload)
        except StreamUnavailable as exc:
            log.warning("outbox_publish_deferred", outbox_id=str(outbox_id), stream=stream, error=str(exc))
            return
        async with self._sessionmaker() as session:
            await repo.mark_outbox_published(session, outbox_ids=[outbox_id])
            await session.commit()


def outbound_payload(brand: BrandProfile, response: OutboundResponse) -> dict[str, Any]:
    """The JSON (an :class:`common.schemas.OutboundPayload`) a channel dispatcher needs for one reply."""
    return OutboundPayload(
        message_id=response.message_id,
        conversation_id=response.conversation_id,
        tenant_id=brand.tenant_id,
        brand_id=brand.id,
        channel=response.channel,
        customer_id=response.customer_id,
        in_reply_to=response.in_reply_to,
        text=response.text,
    ).model_dump(mode="json")


def _usage(resp: ChatResponse | None) -> dict[str, Any] | None:
    if resp is None:
        return None
    return {
        "model": resp.model,
        "prompt_tokens": resp.prompt_tokens,
        "completion_tokens": resp.completion_tokens,
        "latency_ms": resp.latency_ms,
        "raw_answer_chars": len(resp.text),
    }


def _as_chat(row: Any) -> ChatMessage:
    if row.direction == Direction.INBOUND:
        return ChatMessage(role="user", content=row.text)
    return ChatMessage(role="assistant", content=row.text)


def _response_from_log(message: InboundMessage, reply: Any, *, duplicate: bool) -> OutboundResponse:
    citations = tuple(Citation(**c) for c in (reply.citations or []))
    decisions = tuple(GuardrailDecision(**d) for d in (reply.guardrails or []))
    return OutboundResponse(
        conversation_id=reply.conversation_id,
        message_id=reply.id,
        brand_id=reply.brand_id,
        channel=message.channel,
        customer_id=message.customer_id,
        text=reply.text,
        in_reply_to=message.provider_message_id,
        citations=citations,
        guardrails=decisions,
        escalated=any(d.action == "escalate" for d in decisions),
        duplicate=duplicate,
    )
