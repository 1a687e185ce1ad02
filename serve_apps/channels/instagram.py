"""Instagram Messaging webhooks (``object: instagram``).

Shape: ``entry[].messaging[]``; each item has ``sender.id`` (the customer's IGSID), ``recipient.id``
(the brand's Instagram account: the ``ChannelConfig.external_id``) and one of ``message``, ``reaction``,
``read``, ``postback``... Every entry and every messaging item is read.

Read as a question: ``message.text``. Ignored: ``message.is_echo`` (our own sends, echoed back: answering
them would loop), ``message.is_deleted`` (the customer unsent it), ``reaction``, ``read``, ``postback``
and any other event. Recorded as unsupported: messages with only ``attachments`` (image, video, audio,
share, story_mention...).
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
    model_config = ConfigDict(extra="ignore")


class _Party(_Loose):
    id: str = Field(min_length=1, max_length=256)


class _Message(_Loose):
    mid: str = Field(min_length=1, max_length=256)
    text: str | None = None
    is_echo: bool = False
    is_deleted: bool = False
    attachments: list[dict[str, Any]] = Field(default_factory=list)


class _Messaging(_Loose):
    sender: _Party
    recipient: _Party
    message: _Message | None = None
    reaction: dict[str, Any] | None = None


class _Entry(_Loose):
    id: str
    messaging: list[_Messaging] = Field(default_factory=list)


class _Payload(_Loose):
    object: str
    entry: list[_Entry]


class InstagramAdapter:
    """Verifies (app-secret HMAC) and parses Instagram Messaging webhooks."""

    channel = Channel.INSTAGRAM

    def verify(self, *, headers: Mapping[str, str], body: bytes, secret: str | None) -> None:
        """Meta's ``X-Hub-Signature-256`` over the raw body."""
        verify_meta_signature(headers=headers, body=body, secret=secret)

    def parse(self, payload: Any, *, account_id: str | None = None) -> list[ParsedEvent]:
        """One event per messaging item, across all entries."""
        try:
            parsed = _Payload.model_validate(payload)
        except ValidationError as exc:
            raise invalid_payload(exc) from exc
        if parsed.object != "instagram":
            return [IgnoredEvent(reason=f"object {parsed.object!r} is not instagram")]
        return [_event(entry, item) for entry in parsed.entry for item in entry.messaging]


def _event(entry: _Entry, item: _Messaging) -> ParsedEvent:
    account = entry.id
    message = item.message
    if message is None:
        kind = "reaction" if item.reaction is not None else "non-message event"
        return IgnoredEvent(reason=kind, account_id=account)
    if message.is_echo:
        return IgnoredEvent(reason="echo of our own message", account_id=account)
    if message.is_deleted:
        return IgnoredEvent(reason="message deleted by the customer", account_id=account)
    # For a customer message the recipient is the brand's account (entry.id names the same account).
    account = item.recipient.id
    if message.text is not None and message.text.strip():
        return ChannelEvent(account, item.sender.id, message.mid, message.text)
    if message.attachments:
        kind = str(message.attachments[0].get("type") or "attachment")
        return ChannelEvent(account, item.sender.id, message.mid, unsupported_text(kind), unsupported=kind)
    return IgnoredEvent(reason="empty message", account_id=account)
