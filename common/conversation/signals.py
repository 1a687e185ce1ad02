"""Read receipts and typing indicators while a reply is drafted: the customer sees the message was read
and that an answer is being written.

Per channel (the sender's ``signal``, :class:`common.channels.base.Signaller`): WhatsApp ``status: read``
with ``typing_indicator``; Instagram ``sender_action`` ``mark_seen`` then ``typing_on``; Telegram
``sendChatAction typing``, renewed every :data:`RENEW_S` seconds while drafting goes on (Telegram shows it
for 5 s); web chat a ``typing`` event on the conversation's SSE stream, renewed the same way.

Best effort by design: the signal runs beside drafting in its own task, a failure is logged and dropped,
and the task is cancelled the moment the reply is stored, so it never delays an answer. It is sent from
the brand's account that will send the reply (the same connection the dispatcher uses), only while the
bot owns the conversation, and at most once per conversation every ``CHANNELS__TYPING_MIN_INTERVAL_S``
(a customer who sends five messages in a burst gets one "typing", not five).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.channels.base import RecipientConfig, Signaller, SignalTarget
from common.channels.registry import SenderRegistry, build_registry
from common.config import Settings
from common.crypto import CredentialCipher
from common.db import repositories as repo
from common.domain import Channel
from common.errors import AssistantError
from common.logging import get_logger

log = get_logger(__name__)

#: Telegram's typing action fades after 5 s: renewed a little before.
RENEW_S = 4.5
#: Channels with a read / typing signal.
SIGNALLED = frozenset({Channel.WHATSAPP, Channel.INSTAGRAM, Channel.TELEGRAM, Channel.WEBCHAT})
_MAX_TRACKED = 10_000


@dataclass(frozen=True, slots=True)
class _Draft:
    """The message being answered, whose customer gets the signal."""

    brand_id: uuid.UUID
    tenant_id: uuid.UUID
    channel: Channel
    conversation_id: uuid.UUID
    customer_id: str
    message_id: str


class TypingSignals:
    """Starts and stops the read / typing signal of one draft; one per orchestrator."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        registry: SenderRegistry | None = None,
        redis: aioredis.Redis | None = None,
    ) -> None:
        self._settings = settings
        self._redis = redis  # web chat's typing goes out through Redis, like its replies
        self._sessionmaker = sessionmaker
        self._registry = registry
        self._cipher = CredentialCipher.from_settings(settings.secrets)
        self._last: dict[uuid.UUID, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(
        self,
        *,
        brand_id: uuid.UUID,
        tenant_id: uuid.UUID,
        channel: Channel,
        conversation_id: uuid.UUID,
        customer_id: str,
        message_id: str,
    ) -> asyncio.Task[None] | None:
        """The running signal (cancel it once the reply is stored), or None when none is due."""
        if not self._settings.channels.typing_signals or channel not in SIGNALLED:
            return None
        now = time.monotonic()
        if now - self._last.get(conversation_id, -1e9) < self._settings.channels.typing_min_interval_s:
            return None
        if len(self._last) >= _MAX_TRACKED:
            self._last.clear()  # a coarse bound: at worst one extra signal per conversation
        self._last[conversation_id] = now
        who = _Draft(brand_id, tenant_id, channel, conversation_id, customer_id, message_id)
        task = asyncio.create_task(self._run(who), name="typing-signal")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, draft: _Draft) -> None:
        brand_id, tenant_id, channel = draft.brand_id, draft.tenant_id, draft.channel
        try:
            async with self._sessionmaker() as session:
                config = await repo.find_brand_channel_config(session, brand_id=brand_id, channel=channel)
            if config is None or config.tenant_id != tenant_id:
                return
            route = repo.route_of(config, self._cipher)
            account = RecipientConfig(
                channel=channel,
                external_id=config.external_id,
                settings=config.settings,
                credentials=route.credentials,
            )
            sender = self._senders().get(channel)
            if not isinstance(sender, Signaller):
                return
            target = SignalTarget(account, draft.customer_id, draft.message_id, draft.conversation_id)
            first = True
            while True:
                renew = await sender.signal(target, first=first)
                first = False
                if not renew:
                    return
                await asyncio.sleep(RENEW_S)
        except AssistantError as exc:
            log.info("typing_signal_failed", channel=channel.value, error=exc.message)
        except Exception as exc:  # a signal must never fail the draft it accompanies
            log.warning("typing_signal_failed", channel=channel.value, error=type(exc).__name__)

    def _senders(self) -> SenderRegistry:
        if self._registry is None:
            self._registry = build_registry(self._settings, redis=self._redis)
        return self._registry

    async def aclose(self) -> None:
        """Stop running signals and close the senders' HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        if self._registry is not None:
            await self._registry.aclose()
            self._registry = None  # built again if used again
