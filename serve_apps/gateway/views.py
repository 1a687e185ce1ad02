"""Stored rows as the fields of API models, written once for every route group that shows them."""

from __future__ import annotations

from typing import Any

from common.domain import Channel, ConversationState, Direction
from common.schemas import CitationOut, DeliveryOut, GuardrailOut


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
