"""The message pipeline: one inbound message in, one grounded reply out.

:class:`MessageOrchestrator` composes the four parts of a conversation's work and is what the
orchestrator deployment serves (every public method is callable through its handle):

* :mod:`~common.conversation.intake`: store an inbound message and queue it (``accept``), route a
  provider account to its brand (``channel_route``);
* :mod:`~common.conversation.drafting`: a turn in, a draft reply out (guardrails, retrieval, the
  persona prompt, the model, actions, escalation); writes nothing;
* :mod:`~common.conversation.replies`: store the reply with its outbox rows in one transaction and
  publish after commit (one reply per inbound message);
* :mod:`~common.conversation.agents`: agents answer, take over and release conversations.

Two entry points share drafting and storing:

* :meth:`MessageOrchestrator.handle` (synchronous API): validate → brand → duplicate check →
  conversation → draft → one transaction {inbound log, reply, outbox rows} → publish → mark published.
* :meth:`MessageOrchestrator.accept` + :meth:`MessageOrchestrator.process_stored` (webhooks, web chat):
  the inbound message is committed with an outbox row for the ``inbound`` stream *before* the provider
  gets its 200; a worker then drafts and stores the reply.

Dependencies are injected as plain callables so the same code runs inside the Ray Serve orchestrator
deployment (callables wrap deployment handles) and in-process (tests, the no-Serve baseline benchmark).
A failed publish never fails the reply: the outbox row stays unpublished and the relay sends it later.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.config import Settings
from common.conversation.actions import ActionRegistry, PluginDeps
from common.conversation.actions.engine import ActionEngine
from common.conversation.agents import AgentFile, AgentOperations
from common.conversation.drafting import (
    HISTORY_TURNS,
    ChatFn,
    Drafter,
    ProgressFn,
    RankFn,
    RetrieveFn,
    SpellFn,
    StreamFn,
    load_turn,
)
from common.conversation.intake import Intake, check_size, conversation_for, count_inbound
from common.conversation.media import MediaIntake
from common.conversation.replies import ReplyStore, response_from_log, stored_reply
from common.conversation.signals import TypingSignals
from common.db import repositories as repo
from common.domain import (
    Accepted,
    Channel,
    ChannelRoute,
    ConversationState,
    Direction,
    InboundMessage,
    OutboundResponse,
)
from common.errors import NotFound
from common.observability import stage
from common.outbox import OutboxPublisher
from common.streams import StreamPublisher

#: Where the draft of one web chat reply goes: ``(conversation id, inbound message id) -> progress``.
DraftsFn = Callable[[uuid.UUID, uuid.UUID], ProgressFn]


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
        actions: ActionEngine | None = None,
        publish_after_ack: bool = False,
        rank: RankFn | None = None,
        spell: SpellFn | None = None,
        media: MediaIntake | None = None,
        signals: TypingSignals | None = None,
        stream: StreamFn | None = None,
        drafts: DraftsFn | None = None,
        redis: aioredis.Redis | None = None,
    ) -> None:
        """``publish_after_ack``: see :class:`common.conversation.intake.Intake`; ``media`` fetches what
        customers send, ``signals`` the read / typing signals while drafting (both on these settings by
        default); ``stream`` (the chat model, streaming) and ``drafts`` (where a web chat reply's draft
        goes, per conversation and inbound message) show web chat replies as they are written; ``redis``
        carries web chat's typing signal (none without it)."""
        self._drafts = drafts
        self._settings = settings
        self._sessionmaker = sessionmaker
        outbox = OutboxPublisher(sessionmaker, publisher)
        self.intake = Intake(
            settings=settings, sessionmaker=sessionmaker, outbox=outbox, publish_after_ack=publish_after_ack
        )
        self.drafter = Drafter(
            settings=settings,
            retrieve=retrieve,
            chat=chat,
            rank=rank,
            spell=spell,
            stream=stream if drafts is not None else None,
            actions=actions
            or ActionEngine(
                registry=ActionRegistry.build(
                    PluginDeps(settings.actions, retrieve=retrieve, min_score=settings.retrieval.min_score)
                ),
                sessionmaker=sessionmaker,
                settings=settings.actions,
            ),
        )
        self.replies = ReplyStore(settings=settings, sessionmaker=sessionmaker, outbox=outbox)
        self.agents = AgentOperations(settings=settings, sessionmaker=sessionmaker, outbox=outbox)
        self.media = media or MediaIntake(settings=settings, sessionmaker=sessionmaker)
        self.signals = signals or TypingSignals(settings=settings, sessionmaker=sessionmaker, redis=redis)

    async def handle(self, message: InboundMessage) -> OutboundResponse:
        """Answer one message now (synchronous API); a repeated message id returns the stored reply.

        Inbound log, reply and outbox row are written in one transaction after generation.
        """
        check_size(self._settings, message)
        with stage("orchestrator.handle", channel=message.channel.value, brand_id=message.brand_id):
            async with self._sessionmaker() as session:
                brand = await repo.require_brand(session, brand_id=message.brand_id)
                previous = await stored_reply(session, message)
                if previous is not None:
                    return previous
                conversation = await conversation_for(session, brand, message)
                history = await repo.recent_messages(
                    session, conversation_id=conversation.id, limit=HISTORY_TURNS
                )
                turn = await load_turn(session, brand, message, conversation, history)
                await session.commit()
            count_inbound(message)
            draft = await self.drafter.draft(turn)
            return await self.replies.store_with_inbound(brand, message, draft)

    async def accept(self, message: InboundMessage) -> Accepted:
        """Store an inbound message and queue it for :meth:`process_stored` (see :class:`Intake`)."""
        return await self.intake.accept(message)

    async def flush_publishes(self) -> None:
        """Wait for the stream publishes that :meth:`accept` left running (``publish_after_ack``)."""
        await self.intake.flush_publishes()

    async def channel_route(self, channel: Channel, external_id: str) -> ChannelRoute | None:
        """The brand a provider account routes to (enabled or not), cached ``route_cache_s`` seconds."""
        return await self.intake.channel_route(channel, external_id)

    async def connection_route(self, connection_id: uuid.UUID) -> ChannelRoute | None:
        """A channel connection by id (see :meth:`Intake.connection_route`)."""
        return await self.intake.connection_route(connection_id)

    async def app_routes(self, app_id: str) -> tuple[ChannelRoute, ...]:
        """The connections of one Meta app (see :meth:`Intake.app_routes`)."""
        return await self.intake.app_routes(app_id)

    async def forget_routes(self) -> None:
        """Drop the cached routes (see :meth:`Intake.forget_routes`)."""
        await self.intake.forget_routes()

    async def process_stored(self, inbound_id: uuid.UUID) -> OutboundResponse:
        """Answer a message stored by :meth:`accept`; idempotent (a second call returns the first reply)."""
        with stage("orchestrator.process_stored", inbound_id=inbound_id):
            return await self._process_stored(inbound_id)

    async def _process_stored(self, inbound_id: uuid.UUID) -> OutboundResponse:
        async with self._sessionmaker() as session:
            inbound = await repo.get_message(session, message_id=inbound_id)
            if inbound is None or inbound.direction != Direction.INBOUND:
                raise NotFound("unknown inbound message", details={"inbound_id": str(inbound_id)})
            conversation = await repo.get_conversation(session, conversation_id=inbound.conversation_id)
            brand = await repo.require_brand(session, brand_id=inbound.brand_id)
            message = InboundMessage(
                brand_id=inbound.brand_id,
                channel=Channel(inbound.channel),
                customer_id=conversation.customer_id,
                text=inbound.text,
                provider_message_id=inbound.provider_message_id or str(inbound.id),
            )
            reply = await repo.find_reply_to(session, inbound_id=inbound.id)
            if reply is not None:
                return response_from_log(message, reply, duplicate=True)
            media = await repo.media_of_message(session, message_id=inbound.id)
        unreadable = None
        if media is not None:
            outcome = await self.media.prepare(inbound, media)
            if outcome.text is None:
                unreadable = outcome
            else:
                message = dataclasses.replace(message, text=outcome.text)
        typing = None
        if conversation.state == ConversationState.BOT.value:
            typing = self.signals.start(
                brand_id=brand.id,
                tenant_id=brand.tenant_id,
                channel=message.channel,
                conversation_id=conversation.id,
                customer_id=conversation.customer_id,
                message_id=message.provider_message_id,
            )
        try:
            async with self._sessionmaker() as session:
                history = await repo.recent_messages(
                    session, conversation_id=conversation.id, limit=HISTORY_TURNS + 1
                )
                earlier = [m for m in history if m.id != inbound.id]
                turn = await load_turn(session, brand, message, conversation, earlier, unreadable)
            progress = None
            if self._drafts is not None and message.channel is Channel.WEBCHAT:
                progress = self._drafts(conversation.id, inbound.id)
            draft = await self.drafter.draft(turn, progress)
            return await self.replies.store_for_inbound(brand, message, conversation, inbound.id, draft)
        finally:
            if typing is not None:
                typing.cancel()  # the reply is stored (or drafting failed): the indicator has done its job

    async def aclose(self) -> None:
        """Close the HTTP clients of media fetches and channel signals (opened on first use)."""
        await self.media.aclose()
        await self.signals.aclose()

    async def agent_reply(self, conversation_id: uuid.UUID, text: str, agent_id: str) -> OutboundResponse:
        """A human agent's message on a conversation in ``handoff`` (see :class:`AgentOperations`)."""
        return await self.agents.agent_reply(conversation_id, text, agent_id)

    async def agent_attachment(
        self, conversation_id: uuid.UUID, file: AgentFile, agent_id: str
    ) -> OutboundResponse:
        """A human agent's file on a conversation in ``handoff`` (see :class:`AgentOperations`)."""
        return await self.agents.agent_attachment(conversation_id, file, agent_id)

    async def release(self, conversation_id: uuid.UUID, agent_id: str) -> ConversationState:
        """Hand a conversation back to the bot (``handoff`` → ``bot``)."""
        return await self.agents.release(conversation_id, agent_id)

    async def take_over(self, conversation_id: uuid.UUID, agent_id: str) -> ConversationState:
        """An agent takes a conversation from the bot (``bot`` → ``handoff``)."""
        return await self.agents.take_over(conversation_id, agent_id)
