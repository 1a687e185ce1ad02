"""Storing replies: the reply log row, its outbox row and, on a handoff, the state change and the agents'
event, in one transaction, published after commit (:mod:`common.outbox`).

One reply per inbound message is enforced by a unique index: when a concurrent delivery or another
worker got there first, its reply stands and is returned (``duplicate=True``); ours is dropped.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import urlparse

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common import outbox
from common.config import Settings
from common.conversation import escalation, guardrails, prompting
from common.conversation.drafting import Draft
from common.conversation.intake import conversation_for, stream_payload
from common.db import repositories as repo
from common.domain import (
    BrandProfile,
    Citation,
    ConversationState,
    GuardrailDecision,
    InboundMessage,
    OutboundResponse,
)
from common.errors import StreamUnavailable
from common.logging import get_logger
from common.observability import carrier, stage
from common.outbox import OutboxEntry, OutboxPublisher
from common.schemas import ChatMessage, ChatResponse, LinkButton, OutboundAttachment, OutboundPayload
from common.streams import OUTBOUND_STREAM

log = get_logger(__name__)


@dataclass(frozen=True)
class Written:
    """A stored reply and the outbox entries to publish after commit."""

    response: OutboundResponse
    publish: list[OutboxEntry]


class ReplyStore:
    """Writes replies (see the module docstring); the one store → rollback-on-duplicate → commit →
    publish sequence for both entry points."""

    def __init__(
        self, *, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], outbox: OutboxPublisher
    ) -> None:
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._outbox = outbox

    async def store_with_inbound(
        self, brand: BrandProfile, message: InboundMessage, draft: Draft
    ) -> OutboundResponse:
        """Inbound message and reply together (the synchronous API, where the inbound row is new)."""

        async def write(session: AsyncSession) -> Written | None:
            conversation = await conversation_for(session, brand, message)
            inbound = await repo.insert_inbound(session, conversation=conversation, message=message)
            if inbound is None:
                return None  # a concurrent delivery of the same message won the race
            written = await self._write_reply(session, brand, message, conversation, inbound.id, draft)
            if written is None:  # pragma: no cover - the inbound row was created in this transaction
                raise StreamUnavailable("reply already recorded for a new inbound message")
            return written

        async def duplicate(session: AsyncSession) -> OutboundResponse:
            stored = await stored_reply(session, message)
            if stored is None:
                raise StreamUnavailable("duplicate message is still being answered; retry shortly")
            return stored

        return await self._store(write, duplicate)

    async def store_for_inbound(
        self,
        brand: BrandProfile,
        message: InboundMessage,
        conversation: Any,
        inbound_id: uuid.UUID,
        draft: Draft,
    ) -> OutboundResponse:
        """The reply to a message stored earlier (by :meth:`~common.conversation.intake.Intake.accept`)."""

        async def write(session: AsyncSession) -> Written | None:
            return await self._write_reply(session, brand, message, conversation, inbound_id, draft)

        async def duplicate(session: AsyncSession) -> OutboundResponse:
            # Another worker answered this message first; its reply stands, ours is dropped.
            reply = await repo.find_reply_to(session, inbound_id=inbound_id)
            if reply is None:  # pragma: no cover - the unique index said it exists
                raise StreamUnavailable("reply vanished during deduplication; retry")
            return response_from_log(message, reply, duplicate=True)

        return await self._store(write, duplicate)

    async def _store(
        self,
        write: Callable[[AsyncSession], Awaitable[Written | None]],
        duplicate: Callable[[AsyncSession], Awaitable[OutboundResponse]],
    ) -> OutboundResponse:
        """``write`` in one transaction (``None``: a unique key said it is a duplicate: roll back and
        answer with ``duplicate``), commit, then publish what it wrote."""
        with stage("orchestrator.store_reply", stage_label="store"):
            async with self._sessionmaker() as session:
                written = await write(session)
                if written is None:
                    await session.rollback()
                    return await duplicate(session)
                await session.commit()
        await self._outbox.publish(*written.publish)
        return written.response

    async def _write_reply(
        self,
        session: AsyncSession,
        brand: BrandProfile,
        message: InboundMessage,
        conversation: Any,
        inbound_id: uuid.UUID,
        draft: Draft,
    ) -> Written | None:
        """Reply log row and, when there is something to send, its outbox row; on a handoff also the state
        change and the agents' event (caller commits)."""
        outbound = await repo.insert_outbound(
            session,
            conversation=conversation,
            in_reply_to=inbound_id,
            text=draft.text,
            citations=[asdict(c) for c in draft.citations],
            guardrails=[asdict(d) for d in draft.decisions],
            prompt=audit_prompt(draft.prompt),
            llm_usage=llm_usage(draft.usage),
            persona_version=brand.persona_version or None,
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
        publish: list[OutboxEntry] = []
        if draft.handoff:
            await repo.set_conversation_state(
                session, conversation_id=conversation.id, state=ConversationState.HANDOFF
            )
            trigger = next((d for d in draft.decisions if d.rule.startswith(escalation.RULE_PREFIX)), None)
            publish.append(
                await agent_event(
                    session,
                    self._settings,
                    conversation,
                    kind="handoff",
                    trigger=trigger.rule.removeprefix(escalation.RULE_PREFIX) if trigger else "",
                    reason=trigger.reason if trigger else "",
                )
            )
            log.info("conversation_handed_off", conversation_id=str(conversation.id))
        if draft.text:
            payload = outbound_payload(brand, response, handoff=draft.handoff)
            publish.insert(0, await outbox.add(session, stream=OUTBOUND_STREAM, payload=payload))
        return Written(response, publish)


async def agent_event(
    session: AsyncSession,
    settings: Settings,
    conversation: Any,
    *,
    kind: str,
    agent_id: str | None = None,
    trigger: str = "",
    reason: str = "",
) -> OutboxEntry:
    """The agents' event (``handoff``, ``agent_reply``, ``taken_over``, ``released``) as an outbox row."""
    payload = escalation.AgentEvent.model_validate(
        {
            "kind": kind,
            "conversation_id": conversation.id,
            "tenant_id": conversation.tenant_id,
            "brand_id": conversation.brand_id,
            "channel": conversation.channel,
            "customer_id": conversation.customer_id,
            "trigger": trigger,
            "reason": reason,
            "agent_id": agent_id,
        }
    ).model_dump(mode="json")
    return await outbox.add(session, stream=settings.escalation.events_stream, payload=payload)


async def stored_reply(session: AsyncSession, message: InboundMessage) -> OutboundResponse | None:
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
    return response_from_log(message, reply, duplicate=True)


def outbound_payload(
    brand: BrandProfile,
    response: OutboundResponse,
    *,
    sender: Literal["bot", "agent"] = "bot",
    handoff: bool = False,
    attachment: OutboundAttachment | None = None,
) -> dict[str, Any]:
    """The JSON (an :class:`common.schemas.OutboundPayload`) a channel dispatcher needs for one reply;
    ``handoff``: the bot's last message, the one that tells the customer a person takes over."""
    payload = OutboundPayload(
        message_id=response.message_id,
        conversation_id=response.conversation_id,
        tenant_id=brand.tenant_id,
        brand_id=brand.id,
        channel=response.channel,
        customer_id=response.customer_id,
        in_reply_to=response.in_reply_to or None,
        text=response.text,
        sender=sender,
        handoff=handoff,
        attachment=attachment,
        quick_replies=reply_buttons(response.guardrails),
        links=link_buttons(response.citations),
        trace=carrier(),  # the dispatcher continues this trace (through outbox and relay too)
    )
    return stream_payload(payload)


#: The buttons of an action confirmation; the engine reads "Yes" as yes and anything else as no.
CONFIRM_BUTTONS = ("Yes", "No")


def reply_buttons(decisions: Iterable[GuardrailDecision | Mapping[str, Any]]) -> list[str]:
    """The options a reply goes out with, from its stored decisions: a confirmation question gets
    yes / no, a reply that could not answer the brand's suggested questions; so a tap comes back as the
    answer with no typing needed (every channel, web chat included)."""
    pairs = [
        (d.rule, d.action, d.reason)
        if isinstance(d, GuardrailDecision)
        else (str(d.get("rule")), str(d.get("action")), str(d.get("reason", "")))
        for d in decisions
    ]
    if any(action == "confirm" for _, action, _ in pairs):
        return list(CONFIRM_BUTTONS)
    for rule, _, reason in pairs:
        if rule == escalation.SUGGEST_RULE:
            try:
                options = json.loads(reason)
            except ValueError:
                return []
            return [str(o) for o in options][:10] if isinstance(options, list) else []
    return []


#: How many cited pages go out as link buttons (WhatsApp shows the first only; Instagram and Telegram 3).
MAX_LINKS = 3


def link_buttons(citations: Iterable[Citation]) -> list[LinkButton]:
    """The cited sources that are public web pages (an ``http(s)://`` uri), once each, as buttons titled
    with the section they came from. A file or upload has no page to open and gets none."""
    buttons: list[LinkButton] = []
    for citation in citations:
        url = citation.source.strip()
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or any(b.url == url for b in buttons):
            continue
        if len(url) > 2000 or any(c.isspace() for c in url):
            continue
        section = citation.heading_path.split(" > ")[-1].strip() if citation.heading_path else ""
        buttons.append(LinkButton(title=section[:80] or "Read more", url=url))
        if len(buttons) == MAX_LINKS:
            break
    return buttons


def response_from_log(message: InboundMessage, reply: Any, *, duplicate: bool) -> OutboundResponse:
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


def audit_prompt(prompt: list[ChatMessage] | None) -> list[dict[str, Any]] | None:
    """The rendered prompt as stored for audit: personal data redacted, template version attached."""
    if not prompt:
        return None
    stored = [{"role": m.role, "content": guardrails.redact(m.content)} for m in prompt]
    stored[0]["version"] = prompting.PROMPT_VERSION
    return stored


def llm_usage(resp: ChatResponse | None) -> dict[str, Any] | None:
    if resp is None:
        return None
    return {
        "model": resp.model,
        "prompt_tokens": resp.prompt_tokens,
        "completion_tokens": resp.completion_tokens,
        "latency_ms": resp.latency_ms,
        "raw_answer_chars": len(resp.text),
        "prompt_version": prompting.PROMPT_VERSION,
    }
