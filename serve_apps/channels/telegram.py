"""Telegram Bot API webhooks: one ``Update`` per POST to ``/webhooks/telegram/{bot_id}``.

Authenticity: Telegram sends the ``secret_token`` given to ``setWebhook`` in the
``X-Telegram-Bot-Api-Secret-Token`` header (no network call to verify). The bot id in the URL is the
``ChannelConfig.external_id``; the idempotency key is ``"{bot_id}:{update_id}"`` (update ids are
per bot).

Read as a question: ``message.text`` in a private chat from a person. Ignored: ``edited_message`` (an edit
of a message already answered is not a new question; answering it would reply twice to one thought),
messages from bots, group/supergroup chats (the assistant answers one-to-one only), ``channel_post``,
``callback_query`` and every other update type. Recorded as unsupported: private messages without text
(photo, sticker, location, voice, document, ...).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.domain import Channel
from common.errors import Unauthorized
from serve_apps.channels.base import (
    ChannelEvent,
    IgnoredEvent,
    ParsedEvent,
    invalid_payload,
    unsupported_text,
)

SECRET_HEADER = "x-telegram-bot-api-secret-token"  # noqa: S105 - a header name

#: Message fields that carry content we cannot read; the first present names the unsupported type.
MEDIA_FIELDS = (
    "photo",
    "sticker",
    "location",
    "venue",
    "voice",
    "video",
    "video_note",
    "audio",
    "document",
    "animation",
    "contact",
    "poll",
    "dice",
)


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class _User(_Loose):
    id: int
    is_bot: bool = False


class _Chat(_Loose):
    id: int
    type: str


class _Message(_Loose):
    message_id: int
    chat: _Chat
    sender: _User | None = Field(default=None, alias="from")
    text: str | None = None


class _Update(_Loose):
    update_id: int
    message: _Message | None = None
    edited_message: dict[str, Any] | None = None


class TelegramAdapter:
    """Verifies the secret-token header and parses one Telegram ``Update``."""

    channel = Channel.TELEGRAM

    def verify(self, *, headers: Mapping[str, str], body: bytes, secret: str | None) -> None:
        """The header must equal the secret given to ``setWebhook`` (constant-time comparison)."""
        if not secret:
            raise Unauthorized("webhook secret is not configured")
        received = headers.get(SECRET_HEADER, "")
        if not received or not hmac.compare_digest(received.encode(), secret.encode()):
            raise Unauthorized("missing or wrong secret token")

    def parse(self, payload: Any, *, account_id: str | None = None) -> list[ParsedEvent]:
        """Zero or one event: Telegram sends one update per request."""
        if account_id is None:
            raise ValueError("Telegram updates are routed by the bot id in the URL")
        try:
            update = _Update.model_validate(payload)
        except ValidationError as exc:
            raise invalid_payload(exc) from exc
        if update.message is None:
            kind = "edited_message" if update.edited_message is not None else _update_type(update)
            return [IgnoredEvent(reason=f"{kind} update is not handled", account_id=account_id)]
        return [_message_event(account_id, update.update_id, update.message)]


def _update_type(update: _Update) -> str:
    extra = [k for k in (update.model_extra or {}) if k != "update_id"]
    return extra[0] if extra else "empty"


def _message_event(bot_id: str, update_id: int, message: _Message) -> ParsedEvent:
    if message.sender is None or message.sender.is_bot:
        return IgnoredEvent(reason="message not sent by a person", account_id=bot_id)
    if message.chat.type != "private":
        return IgnoredEvent(reason=f"{message.chat.type} chats are not answered", account_id=bot_id)
    key = f"{bot_id}:{update_id}"
    customer = str(message.chat.id)
    if message.text is not None and message.text.strip():
        return ChannelEvent(bot_id, customer, key, message.text)
    extra = message.model_extra or {}
    kind = next((f for f in MEDIA_FIELDS if f in extra), "non-text message")
    return ChannelEvent(bot_id, customer, key, unsupported_text(kind), unsupported=kind)
