"""The reply stream of one web chat conversation, as Server-Sent Events.

Order of work on connect, so nothing delivered in between is lost:

1. ``SUBSCRIBE`` to the conversation's Pub/Sub channel
   (:func:`common.channels.webchat.webchat_channel`);
2. catch up from the message log: replies stored after the client's last seen message (``Last-Event-ID``
   header on a browser reconnect, else the ``after`` query parameter);
3. stream notices from the web chat sender, reading each reply from the log (same conversation only);
   a reply already sent in step 2 is not sent twice.

Wire format: ``retry:`` once, ``: connected`` and ``: heartbeat`` comments, and per reply
``id: <message id>`` / ``event: message`` / ``data: <WebchatMessageOut JSON>``. While a streaming model
writes a reply, ``event: draft`` / ``data: {"in_reply_to", "text"}`` carries the text so far (from
Pub/Sub, provisional: the stored reply's ``message`` event replaces it, and no draft follows the reply it
drafted). While any reply is drafted, ``event: typing`` / ``data: {}`` comes every few seconds (the
orchestrator's typing signal), so a widget opened in a second tab shows it too and none gives up waiting
while the answer is still being written. The stream ends on client
disconnect or after ``webchat.sse_max_s`` (the browser then reconnects with ``Last-Event-ID``); the
subscription is always released.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.channels.webchat import WebchatDraft, WebchatNotice, WebchatTyping, webchat_channel
from common.config import Settings
from common.conversation.replies import reply_buttons
from common.db import repositories as repo
from common.db.models import MessageLog
from common.domain import Direction
from common.logging import get_logger
from serve_apps.webchat.schemas import WebchatAttachmentOut, WebchatCitationOut, WebchatMessageOut

log = get_logger(__name__)

RETRY_MS = 3000
CATCH_UP_LIMIT = 50
POLL_S = 1.0


def message_out(row: MessageLog, media: Any | None = None) -> WebchatMessageOut:
    """The public view of a logged message (no prompts, scores or guardrail internals); ``media``: the
    file that came with it (only a stored one sent to the visitor is shown)."""
    inbound = row.direction == Direction.INBOUND
    attachment = None
    if media is not None and not inbound and media.status == "stored":
        attachment = WebchatAttachmentOut(
            id=media.id,
            kind=media.kind,
            filename=media.filename or media.kind,
            mime_type=media.mime_type or "application/octet-stream",
            size_bytes=media.size_bytes,
        )
    return WebchatMessageOut(
        id=row.id,
        role="visitor" if inbound else "assistant",
        text=row.text,
        created_at=row.created_at,
        citations=_citations(row),
        buttons=[] if inbound else reply_buttons(row.guardrails or []),
        attachment=attachment,
    )


async def messages_out(session: AsyncSession, rows: list[MessageLog]) -> list[WebchatMessageOut]:
    """The public view of ``rows``, with their files."""
    media = await repo.media_for(session, message_ids=[r.id for r in rows])
    return [message_out(r, media.get(r.id)) for r in rows]


def format_event(message: WebchatMessageOut) -> str:
    """One SSE ``message`` event (the JSON has no newlines, so one ``data:`` line)."""
    return f"id: {message.id}\nevent: message\ndata: {message.model_dump_json()}\n\n"


def format_draft(draft: WebchatDraft) -> str:
    """One SSE ``draft`` event: the reply so far, while a streaming model writes it. No ``id:`` line, so a
    reconnect resumes after the last stored reply, never after a draft."""
    body = json.dumps({"in_reply_to": str(draft.in_reply_to), "text": draft.text}, ensure_ascii=False)
    return f"event: draft\ndata: {body}\n\n"


#: The one SSE ``typing`` frame (no ``id:``: a reconnect never resumes after it).
TYPING_EVENT = "event: typing\ndata: {}\n\n"


def _live_of(conversation_id: uuid.UUID, data: object) -> WebchatDraft | WebchatTyping | None:
    """A published draft or typing signal of this conversation, or None (a reply notice, or else)."""
    if not isinstance(data, str | bytes):
        return None
    for model in (WebchatDraft, WebchatTyping):
        try:
            live = model.model_validate_json(data)
        except ValidationError:
            continue  # a reply notice (WebchatNotice) has no "kind" and fails both
        return live if live.conversation_id == conversation_id else None
    return None


async def reply_stream(
    *,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: aioredis.Redis,
    conversation_id: uuid.UUID,
    after: uuid.UUID | None,
    is_disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """Yield SSE frames for ``conversation_id`` until disconnect or ``sse_max_s``."""
    cfg = settings.webchat
    pubsub = redis.pubsub()
    await pubsub.subscribe(webchat_channel(settings.redis, conversation_id))
    loop = asyncio.get_running_loop()
    try:
        yield f"retry: {RETRY_MS}\n: connected\n\n"
        seen: set[uuid.UUID] = set()
        answered: set[uuid.UUID] = set()
        if after is not None:
            for earlier in await _catch_up(sessionmaker, conversation_id, after):
                seen.add(earlier.id)
                yield format_event(earlier)
        deadline = loop.time() + cfg.sse_max_s
        next_beat = loop.time() + cfg.heartbeat_s
        while loop.time() < deadline and not await is_disconnected():
            raw = await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_S)
            if raw is None:
                if loop.time() >= next_beat:
                    next_beat = loop.time() + cfg.heartbeat_s
                    yield ": heartbeat\n\n"
                continue
            live = _live_of(conversation_id, raw.get("data"))
            if isinstance(live, WebchatTyping):
                yield TYPING_EVENT
                continue
            if live is not None:
                if live.in_reply_to not in answered:
                    yield format_draft(live)
                continue
            noticed = await _noticed_reply(sessionmaker, conversation_id, raw.get("data"))
            if noticed is None or noticed[0].id in seen:
                continue
            row, out = noticed
            seen.add(row.id)
            if row.in_reply_to is not None:
                answered.add(row.in_reply_to)  # a draft published late never follows its final reply
            yield format_event(out)
    finally:
        await _release(pubsub)


async def _catch_up(
    sessionmaker: async_sessionmaker[AsyncSession], conversation_id: uuid.UUID, after: uuid.UUID
) -> list[WebchatMessageOut]:
    async with sessionmaker() as session:
        rows = await repo.messages_after(
            session,
            conversation_id=conversation_id,
            after_message_id=after,
            direction=Direction.OUTBOUND,
            limit=CATCH_UP_LIMIT,
        )
        return await messages_out(session, [r for r in rows if r.text])


async def _noticed_reply(
    sessionmaker: async_sessionmaker[AsyncSession], conversation_id: uuid.UUID, data: object
) -> tuple[MessageLog, WebchatMessageOut] | None:
    """The stored reply a notice names, only if it is an outbound message of this conversation."""
    if not isinstance(data, str | bytes):
        return None
    try:
        notice = WebchatNotice.model_validate_json(data)
    except ValidationError:
        log.warning("webchat_notice_malformed", conversation_id=str(conversation_id))
        return None
    if notice.conversation_id != conversation_id:
        return None
    async with sessionmaker() as session:
        row = await repo.get_message(session, message_id=notice.message_id)
        if row is None or row.conversation_id != conversation_id or row.direction != Direction.OUTBOUND:
            return None
        return (row, (await messages_out(session, [row]))[0]) if row.text else None


async def _release(pubsub: aioredis.client.PubSub) -> None:
    try:
        await pubsub.unsubscribe()
        # Through a typed name: redis-py types aclose() from 8.x on and left it untyped before, so a
        # direct call needs a `type: ignore` on one version and fails as an unused ignore on the other.
        close: Callable[[], Awaitable[None]] = pubsub.aclose
        await close()
    except RedisError as exc:  # the connection is gone with Redis; nothing left to release
        log.warning("webchat_unsubscribe_failed", error=str(exc))


def _citations(row: MessageLog) -> list[WebchatCitationOut]:
    out: list[WebchatCitationOut] = []
    seen: set[tuple[str, str]] = set()
    for c in row.citations or []:
        key = (str(c.get("source", "")), str(c.get("heading_path", "")))
        if key[0] and key not in seen:
            seen.add(key)
            out.append(WebchatCitationOut(source=key[0], heading_path=key[1]))
    return out
