"""What human agents do to a conversation: answer it, take it over from the bot, hand it back.

Each is one transaction (log row / state change, outbox rows for the reply and the agents' event),
published after commit. A conversation must be in the right state (``handoff`` to answer or release,
``bot`` to take over), else 409.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common import outbox
from common.config import Settings
from common.conversation.replies import agent_event, outbound_payload
from common.db import repositories as repo
from common.domain import Channel, ConversationState, GuardrailDecision, OutboundResponse
from common.errors import Conflict, InvalidInput, PayloadTooLarge, StreamUnavailable
from common.logging import get_logger
from common.outbox import OutboxPublisher
from common.streams import OUTBOUND_STREAM

log = get_logger(__name__)

AGENT_RULE = "agent_reply"


class AgentOperations:
    """Agent actions on conversations (the agent API and console call these through the orchestrator)."""

    def __init__(
        self, *, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], outbox: OutboxPublisher
    ) -> None:
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._outbox = outbox

    async def agent_reply(self, conversation_id: uuid.UUID, text: str, agent_id: str) -> OutboundResponse:
        """Send a human agent's message on a conversation in ``handoff``: logged, then the outbox row
        (``sender="agent"``) and an ``agent_reply`` event, in one transaction; published after commit."""
        text = text.strip()
        if not text:
            raise InvalidInput("agent message is empty")
        if len(text) > self._settings.max_message_chars:
            raise PayloadTooLarge(
                "agent message is too long", details={"max_chars": self._settings.max_message_chars}
            )
        async with self._sessionmaker() as session:
            conversation = await repo.get_conversation(session, conversation_id=conversation_id)
            require_state(conversation, ConversationState.HANDOFF, action="reply as agent")
            brand = await repo.require_brand(session, brand_id=conversation.brand_id)
            decision = GuardrailDecision(AGENT_RULE, "pass", f"agent={agent_id}")
            outbound = await repo.insert_outbound(
                session,
                conversation=conversation,
                in_reply_to=None,
                text=text,
                citations=[],
                guardrails=[asdict(decision)],
                prompt=None,
                llm_usage=None,
            )
            if outbound is None:  # pragma: no cover - only replies to an inbound message can collide
                raise StreamUnavailable("agent reply was not recorded; retry")
            response = OutboundResponse(
                conversation_id=conversation.id,
                message_id=outbound.id,
                brand_id=brand.id,
                channel=Channel(conversation.channel),
                customer_id=conversation.customer_id,
                text=text,
                in_reply_to="",
                guardrails=(decision,),
            )
            payload = outbound_payload(brand, response, sender="agent")
            reply = await outbox.add(session, stream=OUTBOUND_STREAM, payload=payload)
            event = await agent_event(
                session, self._settings, conversation, kind="agent_reply", agent_id=agent_id
            )
            await session.commit()
        await self._outbox.publish(reply, event)
        return response

    async def release(self, conversation_id: uuid.UUID, agent_id: str) -> ConversationState:
        """Hand a conversation back to the bot (``handoff`` → ``bot``)."""
        return await self._move(
            conversation_id,
            agent_id,
            frm=ConversationState.HANDOFF,
            to=ConversationState.BOT,
            kind="released",
        )

    async def take_over(self, conversation_id: uuid.UUID, agent_id: str) -> ConversationState:
        """An agent takes a conversation from the bot (``bot`` → ``handoff``)."""
        return await self._move(
            conversation_id,
            agent_id,
            frm=ConversationState.BOT,
            to=ConversationState.HANDOFF,
            kind="taken_over",
        )

    async def _move(
        self,
        conversation_id: uuid.UUID,
        agent_id: str,
        *,
        frm: ConversationState,
        to: ConversationState,
        kind: str,
    ) -> ConversationState:
        async with self._sessionmaker() as session:
            conversation = await repo.get_conversation(session, conversation_id=conversation_id)
            require_state(conversation, frm, action=kind.replace("_", " "))
            await repo.set_conversation_state(session, conversation_id=conversation_id, state=to)
            event = await agent_event(session, self._settings, conversation, kind=kind, agent_id=agent_id)
            await session.commit()
        await self._outbox.publish(event)
        log.info("conversation_moved", conversation_id=str(conversation_id), state=str(to), agent_id=agent_id)
        return to


def require_state(conversation: Any, state: ConversationState, *, action: str) -> None:
    if conversation.state != state.value:
        raise Conflict(
            f"cannot {action}: conversation is {conversation.state}",
            details={"conversation_id": str(conversation.id), "state": conversation.state},
        )
