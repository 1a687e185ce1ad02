"""WhatsApp Cloud API webhooks (``object: whatsapp_business_account``).

Shape: ``entry[].changes[].value`` with ``metadata.phone_number_id`` (the brand's number: the
``ChannelConfig.external_id``), ``messages[]`` (customer messages) and ``statuses[]`` (delivery receipts
of our own sends). Every entry and every change is read; Meta batches several per POST.

Read as a question: ``text``, and the titles of ``interactive`` (button/list reply) and ``button``
(template quick reply) taps. Ignored: ``statuses`` (sent/delivered/read/failed) and ``reaction``.
Recorded as unsupported: every other type (image, sticker, location, audio, video, document, contacts...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.domain import Channel
from serve_apps.channels.base import (
    ChannelEvent,
    IgnoredEvent,
    ParsedEvent,
    invalid_payload,
    unsupported_text,
    verify_meta_signature,
)


class _Loose(BaseModel):
    # Providers add fields without notice; only the ones read here are required.
    model_config = ConfigDict(extra="ignore")


class _Metadata(_Loose):
    phone_number_id: str = Field(min_length=1)


class _Message(_Loose):
    id: str = Field(min_length=1, max_length=256)
    sender: str = Field(alias="from", min_length=1, max_length=256)
    type: str
    text: dict[str, Any] | None = None
    interactive: dict[str, Any] | None = None
    button: dict[str, Any] | None = None


class _Value(_Loose):
    metadata: _Metadata | None = None
    messages: list[_Message] = Field(default_factory=list)
    statuses: list[dict[str, Any]] = Field(default_factory=list)


class _Change(_Loose):
    field: str
    value: _Value


class _Entry(_Loose):
    id: str
    changes: list[_Change] = Field(default_factory=list)


class _Payload(_Loose):
    object: str
    entry: list[_Entry]


class WhatsAppAdapter:
    """Verifies (app-secret HMAC) and parses WhatsApp Cloud API webhooks."""

    channel = Channel.WHATSAPP

    def verify(self, *, headers: Mapping[str, str], body: bytes, secret: str | None) -> None:
        """Meta's ``X-Hub-Signature-256`` over the raw body."""
        verify_meta_signature(headers=headers, body=body, secret=secret)

    def parse(self, payload: Any, *, account_id: str | None = None) -> list[ParsedEvent]:
        """One event per message and per status, across all entries and changes."""
        try:
            parsed = _Payload.model_validate(payload)
        except ValidationError as exc:
            raise invalid_payload(exc) from exc
        if parsed.object != "whatsapp_business_account":
            return [IgnoredEvent(reason=f"object {parsed.object!r} is not whatsapp_business_account")]
        events: list[ParsedEvent] = []
        for entry in parsed.entry:
            for change in entry.changes:
                events.extend(_change_events(change))
        return events


def _change_events(change: _Change) -> list[ParsedEvent]:
    value = change.value
    if change.field != "messages" or value.metadata is None:
        return [IgnoredEvent(reason=f"change field {change.field!r} is not handled")]
    number = value.metadata.phone_number_id
    events: list[ParsedEvent] = [
        IgnoredEvent(reason=f"status {s.get('status', '?')} of our own message", account_id=number)
        for s in value.statuses
    ]
    for message in value.messages:
        events.append(_message_event(number, message))
    return events


def _message_event(number: str, message: _Message) -> ParsedEvent:
    if message.type == "reaction":
        return IgnoredEvent(reason="reaction", account_id=number)
    text = _text_of(message)
    if text is None:
        return ChannelEvent(
            account_id=number,
            customer_id=message.sender,
            message_id=message.id,
            text=unsupported_text(message.type),
            unsupported=message.type,
        )
    if not text.strip():
        return IgnoredEvent(reason="empty text", account_id=number)
    return ChannelEvent(account_id=number, customer_id=message.sender, message_id=message.id, text=text)


def _text_of(message: _Message) -> str | None:
    """The readable text of a message, or None for a type we do not read."""
    if message.type == "text" and message.text is not None:
        return str(message.text.get("body", ""))
    if message.type == "interactive" and message.interactive is not None:
        reply = message.interactive.get("button_reply") or message.interactive.get("list_reply") or {}
        return str(reply.get("title", "")) if isinstance(reply, dict) else None
    if message.type == "button" and message.button is not None:
        return str(message.button.get("text", ""))
    return None
