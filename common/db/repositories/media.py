"""Media customers sent: one row per media message, its bytes apart (``media_contents``).

Part of :mod:`common.db.repositories` (the caller owns the transaction; see there)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from common import domain
from common.db.models import MediaContent, MessageLog, MessageMedia


async def insert_media(session: AsyncSession, *, message: MessageLog, media: domain.MediaRef) -> MessageMedia:
    """Record ``media`` as ``pending`` with the inbound message it came with (a location is ``stored``
    at once: its coordinates are all there is)."""
    row = MessageMedia(
        id=uuid.uuid4(),
        message_id=message.id,
        tenant_id=message.tenant_id,
        brand_id=message.brand_id,
        channel=message.channel,
        connection_id=media.connection_id,
        kind=media.kind,
        voice=media.voice,
        provider_ref=media.ref,
        mime_type=media.mime_type,
        filename=media.filename,
        caption=media.caption,
        details=dict(media.details),
        status="stored" if media.kind == "location" else "pending",
    )
    session.add(row)
    await session.flush()
    return row


async def media_of_message(session: AsyncSession, *, message_id: uuid.UUID) -> MessageMedia | None:
    """The media that came with one message, or None."""
    stmt = select(MessageMedia).where(MessageMedia.message_id == message_id)
    return (await session.scalars(stmt)).one_or_none()


async def media_for(session: AsyncSession, *, message_ids: list[uuid.UUID]) -> dict[uuid.UUID, MessageMedia]:
    """The media of some messages, by message id (never their bytes)."""
    if not message_ids:
        return {}
    rows = await session.scalars(select(MessageMedia).where(MessageMedia.message_id.in_(message_ids)))
    return {r.message_id: r for r in rows}


async def store_media(
    session: AsyncSession,
    *,
    media_id: uuid.UUID,
    data: bytes | None,
    mime_type: str | None,
    sha256: str,
    object_key: str | None = None,
    size_bytes: int | None = None,
) -> None:
    """``stored``, with the fetched bytes (Postgres) or the object key they were uploaded under (S3),
    together (a crash in between leaves it ``pending``, refetched)."""
    if data is not None:
        session.add(MediaContent(media_id=media_id, data=data))
        size_bytes = len(data)
    values: dict[str, Any] = {
        "status": "stored",
        "size_bytes": size_bytes,
        "sha256": sha256,
        "error": None,
        "object_key": object_key,
    }
    if mime_type:
        values["mime_type"] = mime_type[:200]
    await session.execute(update(MessageMedia).where(MessageMedia.id == media_id).values(**values))


async def finish_media(
    session: AsyncSession,
    *,
    media_id: uuid.UUID,
    status: str | None = None,
    error: str | None = None,
    transcript: str | None = None,
    size_bytes: int | None = None,
) -> None:
    """Set what is given: ``too_large`` / ``failed`` with the reason, or a voice note's transcript."""
    values: dict[str, Any] = {}
    if status is not None:
        values["status"] = status
    if error is not None:
        values["error"] = error[:1000]
    if transcript is not None:
        values["transcript"] = transcript
    if size_bytes is not None:
        values["size_bytes"] = size_bytes
    if values:
        await session.execute(update(MessageMedia).where(MessageMedia.id == media_id).values(**values))


async def get_media(session: AsyncSession, *, media_id: uuid.UUID) -> MessageMedia | None:
    """One media row by id (callers check its tenant and brand)."""
    return await session.get(MessageMedia, media_id)


async def media_content(session: AsyncSession, *, media_id: uuid.UUID) -> bytes | None:
    """The stored bytes of one media item, or None."""
    return await session.scalar(select(MediaContent.data).where(MediaContent.media_id == media_id))
