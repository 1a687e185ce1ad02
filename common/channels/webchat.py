"""The web chat sender: a reply is "delivered" by notifying the visitor's open SSE connections.

The notice goes to a Redis Pub/Sub channel per conversation (:func:`webchat_channel`). It carries only
ids: the gateway's SSE handler reads the reply (text and citations) from the message log, filtered by the
conversation it serves, so the event a browser sees is always the stored reply and Pub/Sub content is
never trusted. A visitor with no open connection misses nothing: the widget loads history on page load
and catches up from its last seen message when it reconnects; so zero subscribers is a successful send.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError

from common.channels.base import RecipientConfig, SendResult, SignalTarget
from common.config import RedisSettings
from common.domain import Channel
from common.errors import RetryableSendError
from common.logging import get_logger
from common.schemas import OutboundPayload

log = get_logger(__name__)


class WebchatNotice(BaseModel):
    """What is published on a conversation's channel: which reply to show."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message_id: uuid.UUID
    conversation_id: uuid.UUID


class WebchatDraft(BaseModel):
    """What is published while a reply is being written (a streaming model): the text so far.

    Provisional by nature: the browser shows it until the stored reply's notice arrives, and the stored
    reply (vetted by the guardrails) always replaces it. ``text`` is the whole draft so far, not a delta,
    so a missed or repeated event loses nothing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["draft"] = "draft"
    conversation_id: uuid.UUID
    in_reply_to: uuid.UUID
    text: str


class WebchatDrafts:
    """Publishes the drafts of one reply (throttled: at most one every ``interval_s``, and the last)."""

    def __init__(
        self,
        client: aioredis.Redis,
        settings: RedisSettings,
        *,
        conversation_id: uuid.UUID,
        in_reply_to: uuid.UUID,
        interval_s: float = 0.1,
    ) -> None:
        self._client = client
        self._channel = webchat_channel(settings, conversation_id)
        self._conversation_id = conversation_id
        self._in_reply_to = in_reply_to
        self._interval_s = interval_s
        self._sent_at = 0.0
        self._sent = ""

    async def __call__(self, text: str, *, final: bool = False) -> None:
        """Publish ``text`` (the draft so far) unless one went out less than ``interval_s`` ago."""
        now = time.monotonic()
        if text == self._sent or (not final and now - self._sent_at < self._interval_s):
            return
        self._sent, self._sent_at = text, now
        draft = WebchatDraft(conversation_id=self._conversation_id, in_reply_to=self._in_reply_to, text=text)
        try:
            await self._client.publish(self._channel, draft.model_dump_json())
        except RedisError as exc:  # a draft is a courtesy: the stored reply still arrives
            log.info("webchat_draft_not_published", error=str(exc))


class WebchatTyping(BaseModel):
    """What is published while a reply to ``in_reply_to`` (the visitor's message id) is being drafted;
    renewed while drafting goes on, so the widget keeps showing "typing" and does not give up waiting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["typing"] = "typing"
    conversation_id: uuid.UUID
    in_reply_to: str


def webchat_channel(settings: RedisSettings, conversation_id: uuid.UUID) -> str:
    """The Pub/Sub channel of one conversation (``<prefix>:webchat:<conversation id>``)."""
    return settings.key("webchat", str(conversation_id))


class WebchatSender:
    """:class:`common.channels.base.Sender` for ``Channel.WEBCHAT``; never splits a reply."""

    channel = Channel.WEBCHAT
    max_chars = 100_000

    def __init__(self, client: aioredis.Redis, settings: RedisSettings) -> None:
        self._client = client
        self._settings = settings

    async def send(
        self,
        payload: OutboundPayload,
        *,
        recipient_config: RecipientConfig,
        start_part: int = 0,
        file: bytes | None = None,
    ) -> SendResult:
        """Publish the notice; ``provider_message_id`` is the reply's own id (web chat has no provider).
        An attachment is already with the message (the widget links its download), so ``file`` is unused."""
        result = SendResult(
            provider_message_id=str(payload.message_id), provider_message_ids=(str(payload.message_id),)
        )
        if start_part >= 1:  # the single part already went out
            return result
        notice = WebchatNotice(message_id=payload.message_id, conversation_id=payload.conversation_id)
        try:
            receivers = await self._client.publish(
                webchat_channel(self._settings, payload.conversation_id), notice.model_dump_json()
            )
        except RedisError as exc:
            raise RetryableSendError(f"could not publish web chat reply: {exc}") from exc
        log.info("webchat_reply_published", message_id=str(payload.message_id), receivers=int(receivers))
        return result

    async def signal(self, target: SignalTarget, *, first: bool) -> bool:
        """The ``typing`` event of the visitor's open SSE connections; True: renewed while drafting goes
        on (the widget waits for a reply as long as these keep coming)."""
        typing = WebchatTyping(conversation_id=target.conversation_id, in_reply_to=target.message_id)
        try:
            await self._client.publish(
                webchat_channel(self._settings, target.conversation_id), typing.model_dump_json()
            )
        except RedisError as exc:
            raise RetryableSendError(f"could not publish web chat typing: {exc}") from exc
        return True
