"""What human agents do to a conversation: answer it, take it over from the bot, hand it back.

Each is one transaction (log row / state change, outbox rows for the reply and the agents' event),
published after commit. A conversation must be in the right state (``handoff`` to answer or release,
``bot`` to take over), else 409.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common import outbox
from common.config import Settings
from common.conversation.replies import agent_event, outbound_payload
from common.db import repositories as repo
from common.domain import Channel, ConversationState, GuardrailDecision, MediaRef, OutboundResponse
from common.errors import Conflict, InvalidInput, PayloadTooLarge, StreamUnavailable, UnsupportedMediaType
from common.logging import get_logger
from common.media_scan import build_scanner
from common.media_store import build_media_store
from common.outbox import OutboxPublisher
from common.schemas import OutboundAttachment
from common.streams import OUTBOUND_STREAM

log = get_logger(__name__)

AGENT_RULE = "agent_reply"
#: Where an agent's file can go: WhatsApp and Telegram upload it, web chat links it from the message.
ATTACHABLE = frozenset({Channel.WHATSAPP.value, Channel.TELEGRAM.value, Channel.WEBCHAT.value})
#: The longest caption WhatsApp and Telegram take.
CAPTION_MAX = 1024
#: What an agent may send: pictures as pictures, office files and PDFs as documents (what WhatsApp and
#: Telegram take; no executables, no HTML that a browser would run).
ATTACHMENT_TYPES = {
    "image/jpeg": "image",
    "image/png": "image",
    "application/pdf": "document",
    "text/plain": "document",
    "text/csv": "document",
    "application/msword": "document",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "document",
    "application/vnd.ms-excel": "document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "document",
}
#: The first bytes the types that have them must start with (a declared type is not taken on trust).
_MAGIC = {"image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG\r\n\x1a\n", "application/pdf": b"%PDF-"}


def attachment_kind(data: bytes, mime_type: str) -> Literal["image", "document"]:
    """``image`` or ``document`` for an allowed type whose bytes look like it; else a 415."""
    base = mime_type.split(";", 1)[0].strip().lower()
    kind = ATTACHMENT_TYPES.get(base)
    if kind is None:
        raise UnsupportedMediaType(
            f"cannot send {base or 'a file without a type'}",
            details={"content_type": base, "supported": sorted(ATTACHMENT_TYPES)},
        )
    magic = _MAGIC.get(base)
    if magic is not None and not data.startswith(magic):
        raise UnsupportedMediaType(f"the file is not a {base} file", details={"content_type": base})
    return "image" if kind == "image" else "document"


@dataclass(frozen=True)
class AgentFile:
    """A file an agent sends: its bytes, the type it was uploaded as, its name and optional caption."""

    data: bytes
    mime_type: str
    filename: str
    caption: str = ""


class AgentOperations:
    """Agent actions on conversations (the agent API and console call these through the orchestrator)."""

    def __init__(
        self, *, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], outbox: OutboxPublisher
    ) -> None:
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._outbox = outbox
        self._store = build_media_store(settings)
        self._scanner = build_scanner(settings.media)

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
        return await self._send(conversation_id, text, agent_id, action="reply as agent")

    async def agent_attachment(
        self, conversation_id: uuid.UUID, file: AgentFile, agent_id: str
    ) -> OutboundResponse:
        """Send a human agent's file (a picture or a document, with an optional caption) on a conversation
        in ``handoff``: checked, scanned when a scanner is configured, kept in the media store with the
        message, queued like any agent reply. WhatsApp, Telegram and web chat (Instagram takes files only
        from a public URL, so it is refused with a clear error)."""
        if not file.data:
            raise InvalidInput("the file is empty")
        caption = file.caption.strip()
        kind = attachment_kind(file.data, file.mime_type)
        name = " ".join(file.filename.replace("\\", "/").rsplit("/", 1)[-1].split())[:300] or kind
        limit = self._settings.media.max_bytes
        if len(file.data) > limit:
            raise PayloadTooLarge(
                "the file is too large", details={"max_bytes": limit, "bytes": len(file.data)}
            )
        if len(caption) > CAPTION_MAX:
            raise PayloadTooLarge("the caption is too long", details={"max_chars": CAPTION_MAX})
        if self._scanner is not None:
            verdict = await self._scanner.scan(file.data)
            if not verdict.clean:
                raise InvalidInput(
                    "the file was refused by the virus scan", details={"signature": verdict.signature}
                )
        checked = AgentFile(data=file.data, mime_type=file.mime_type, filename=name, caption=caption)
        sent = await self._send(
            conversation_id, caption or f"[{kind}: {name}]", agent_id, action="send a file as agent",
            file=(checked, kind),
        )  # fmt: skip
        log.info("agent_file_sent", conversation_id=str(conversation_id), kind=kind, bytes=len(file.data))
        return sent

    async def _send(
        self,
        conversation_id: uuid.UUID,
        text: str,
        agent_id: str,
        *,
        action: str,
        file: tuple[AgentFile, Literal["image", "document"]] | None = None,
    ) -> OutboundResponse:
        """The agent's message (and its file), its outbox row and the ``agent_reply`` event: one
        transaction, published after commit."""
        async with self._sessionmaker() as session:
            conversation = await repo.get_conversation(session, conversation_id=conversation_id)
            require_state(conversation, ConversationState.HANDOFF, action=action)
            if file is not None and conversation.channel not in ATTACHABLE:
                raise InvalidInput(
                    f"files cannot be sent on {conversation.channel} yet (Instagram takes them only from a "
                    "public URL)",
                    details={"channel": conversation.channel, "supported": sorted(ATTACHABLE)},
                )
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
            attachment = await self._keep(session, outbound, *file) if file is not None else None
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
            payload = outbound_payload(brand, response, sender="agent", attachment=attachment)
            reply = await outbox.add(session, stream=OUTBOUND_STREAM, payload=payload)
            event = await agent_event(
                session, self._settings, conversation, kind="agent_reply", agent_id=agent_id
            )
            await session.commit()
        await self._outbox.publish(reply, event)
        return response

    async def _keep(
        self, session: AsyncSession, message: Any, file: AgentFile, kind: Literal["image", "document"]
    ) -> OutboundAttachment:
        """The file as the message's media, stored (the caller's transaction)."""
        ref = MediaRef(
            kind=kind, ref="", mime_type=file.mime_type, filename=file.filename, caption=file.caption or None
        )
        media = await repo.insert_media(session, message=message, media=ref)
        digest = hashlib.sha256(file.data).hexdigest()
        await self._store.put(session, media, data=file.data, mime_type=file.mime_type, sha256=digest)
        return OutboundAttachment(
            media_id=media.id,
            kind=kind,
            mime_type=file.mime_type,
            filename=file.filename,
            caption=file.caption,
        )

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
