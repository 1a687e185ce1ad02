"""Stored rows as the fields of API models, written once for every route group that shows them."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.access.principal import Principal
from common.db import repositories as repo
from common.domain import Channel, ConversationState, Direction
from common.errors import NotFound
from common.media_store import MediaStore
from common.schemas import CitationOut, DeliveryOut, GuardrailOut, MediaOut


def conversation_fields(conv: Any) -> dict[str, Any]:
    """What every view of a conversation shows about it (``ConversationOut``, the agents' view)."""
    return {
        "id": conv.id,
        "brand_id": conv.brand_id,
        "channel": Channel(conv.channel),
        "customer_id": conv.customer_id,
        "state": ConversationState(conv.state),
    }


def message_fields(row: Any) -> dict[str, Any]:
    """What every view of a logged message shows: text, direction, citations, guardrail decisions."""
    return {
        "id": row.id,
        "direction": Direction(row.direction),
        "text": row.text,
        "created_at": row.created_at,
        "citations": [CitationOut(**c) for c in (row.citations or [])],
        "guardrails": [GuardrailOut(**g) for g in (row.guardrails or [])],
    }


def media_out(row: Any | None, *, content_path: str) -> MediaOut | None:
    """A message's media as shown with it; ``content_path`` + its id downloads the bytes once stored."""
    if row is None:
        return None
    stored = row.status == "stored" and row.kind != "location"
    return MediaOut(
        id=row.id,
        kind=row.kind,
        voice=row.voice,
        status=row.status,
        mime_type=row.mime_type,
        filename=row.filename,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        error=row.error,
        transcript=row.transcript,
        details=row.details or {},
        content_url=f"{content_path}/{row.id}/content" if stored else None,
    )


async def media_download(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: MediaStore,
    principal: Principal,
    media_id: uuid.UUID,
) -> Response:
    """The stored bytes of one media item of the caller's tenant and brands (else the one 404).

    Sent as an attachment with ``nosniff``: the bytes are the customer's, and must never render as a page
    of this origin (an HTML "document" would otherwise run script with the agent's session).
    """
    async with sessionmaker() as session:
        row = await repo.get_media(session, media_id=media_id)
        if row is None or row.tenant_id != principal.tenant_id or not principal.sees_brand(row.brand_id):
            raise NotFound("unknown media", details={"media_id": str(media_id)})
        data = await store.get(session, row) if row.status == "stored" else None
    if data is None:
        raise NotFound(
            "the media has no stored content", details={"media_id": str(media_id), "status": row.status}
        )
    return attachment_response(row, data)


def attachment_response(row: Any, data: bytes) -> Response:
    """The bytes of a media item as a download: an attachment with ``nosniff``, never rendered as a page
    of this origin (an HTML "document" would otherwise run script there)."""
    name = (row.filename or f"{row.kind}-{row.id}").replace('"', "")
    headers = {
        "content-disposition": f'attachment; filename="{name}"',
        "x-content-type-options": "nosniff",
        "cache-control": "private, no-store",
    }
    return Response(data, media_type=row.mime_type or "application/octet-stream", headers=headers)


def delivery_out(row: Any | None) -> DeliveryOut | None:
    """A reply's delivery record as shown with the message (None: inbound, or not queued for sending)."""
    if row is None:
        return None
    error = (
        row.receipt_error
        if row.receipt == "failed"
        else (row.last_error if row.status in ("failed", "held") else None)
    )
    return DeliveryOut(status=row.status, receipt=row.receipt, receipt_at=row.receipt_at, error=error)
