"""Outbound dispatcher: consumes the ``outbound`` stream and delivers each reply exactly once.

Per stream entry (one :class:`common.schemas.OutboundPayload`)::

    claim deliveries row (atomic upsert, lease)  ──none──► terminal? XACK : leave pending (another holder)
      │ bot reply (not the handoff message) and conversation not ``bot`` ► status skipped, XACK
      │ no enabled account / sender / bad payload ────────► status failed, XADD outbound-dead, XACK
      ▼
    sending_since := now ─► provider call(s), bounded retries honouring Retry-After (common.retry)
      │ accepted      ─► status sent (+ provider ids)  ─► XACK
      │ permanent 4xx ─► status failed ─► XADD outbound-dead (reason) ─► XACK
      └ retryable, tries used up ─► release the row (parts sent so far kept), no XACK: the entry stays
                                    in the pending list and is taken over later with XAUTOCLAIM

The only window left is a crash after the provider accepted and before ``status sent`` commits: the row
is found ``pending`` with ``sending_since`` set and an expired lease. ``delivery.resend_uncertain`` picks
at-least-once (resend, default) or at-most-once (dead-letter as uncertain). See docs/DELIVERY.md.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common import metrics
from common.channels.base import RecipientConfig
from common.channels.registry import SenderRegistry
from common.config import Settings
from common.crypto import CredentialCipher
from common.db import repositories as repo
from common.db.models import Delivery
from common.delivery.window import WINDOWED_CHANNELS
from common.delivery.window import decide as window_decision
from common.domain import ConversationState
from common.errors import CredentialsUnavailable, NotFound, PermanentSendError, RetryableSendError, SendError
from common.logging import get_logger
from common.media_store import build_media_store
from common.observability import BacklogReporter, received_at, stage
from common.retry import RetryPolicy, retry_async
from common.schemas import OutboundPayload
from common.streams import OUTBOUND_STREAM, StreamConsumer, decode_entry

log = get_logger(__name__)

DEAD_LETTER_STREAM = "outbound-dead"


class Outcome(StrEnum):
    """What handling one stream entry did."""

    SENT = "sent"
    ALREADY_DONE = "already_done"  # a redelivered entry whose reply is already sent/failed/skipped: acked
    SKIPPED = "skipped"  # a bot reply in a conversation a human owns: not sent, acked
    DEAD_LETTERED = "dead_lettered"
    DEFERRED = "deferred"  # retryable failure: left pending for a later pass
    HELD = "held"  # outside the provider's window with no template: kept with the reason, acked
    BUSY = "busy"  # another dispatcher holds the lease: left pending


class _Held(Exception):
    """Internal: the provider's window forbids this reply now; record ``reason`` and stop."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Permanent(Exception):
    """Internal: stop handling this entry and dead-letter it with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutboundDispatcher:
    """One consumer of the ``outbound`` stream's consumer group; run several for throughput."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: aioredis.Redis,
        senders: SenderRegistry,
        consumer: str,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._cfg = settings.delivery
        self._cipher = CredentialCipher.from_settings(settings.secrets)
        self._sessionmaker = sessionmaker
        self._senders = senders
        self._store = build_media_store(settings)  # agents' files are sent from there
        self._sleep = sleep
        self._consumer = StreamConsumer(
            redis,
            settings.redis,
            stream=OUTBOUND_STREAM,
            dead_stream=DEAD_LETTER_STREAM,
            group=self._cfg.consumer_group,
            consumer=consumer,
        )
        self.stream = self._consumer.stream
        self.dead_letter_stream = self._consumer.dead_stream
        self._policy = RetryPolicy(
            attempts=self._cfg.send_attempts,
            base_delay_s=self._cfg.retry_base_delay_s,
            max_delay_s=self._cfg.retry_max_delay_s,
        )
        self._backlog = BacklogReporter(
            redis, key=self.stream, stream=OUTBOUND_STREAM, group=self._cfg.consumer_group
        )

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing; reads start at the stream's beginning."""
        await self._consumer.ensure_group()

    async def run_once(self, *, block_ms: int | None = None) -> list[Outcome]:
        """Handle stale pending entries (XAUTOCLAIM) if any, else new ones (XREADGROUP)."""
        cfg = self._cfg
        entries = await self._consumer.claim_stale(min_idle_ms=cfg.claim_min_idle_ms, count=cfg.batch_size)
        if not entries:
            entries = await self._consumer.read_new(count=cfg.batch_size, block_ms=block_ms)
        return [await self.handle_entry(entry.id, entry.fields) for entry in entries]

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set; database or Redis outages are waited out, not fatal (creating
        the consumer group included: a Redis slow to answer while a cluster starts must not end the loop)."""
        while not stop.is_set():
            try:
                await self.ensure_group()
                break
            except RedisError as exc:
                log.warning("dispatcher_backend_error", error=type(exc).__name__, phase="ensure_group")
                await self._sleep(self._cfg.retry_base_delay_s)
        while not stop.is_set():
            try:
                await self.run_once(block_ms=self._cfg.block_ms)
                await self._backlog.maybe_report()
            except (SQLAlchemyError, RedisError) as exc:
                log.warning("dispatcher_backend_error", error=type(exc).__name__)
                await self._sleep(self._cfg.retry_base_delay_s)

    async def handle_entry(self, entry_id: str, fields: dict[str, str] | None) -> Outcome:
        """Deliver one entry's reply at most once per delivery record; XACK when its fate is settled."""
        if not fields:  # trimmed from the stream while pending: nothing left to deliver
            await self._ack(entry_id)
            return Outcome.ALREADY_DONE
        try:
            payload = OutboundPayload.model_validate(decode_entry(fields))
        except (ValueError, KeyError, ValidationError) as exc:
            await self._dead_letter(entry_id, fields, reason=f"invalid payload: {type(exc).__name__}")
            return Outcome.DEAD_LETTERED
        # Continues the trace of the message this reply answers (carried in the payload).
        with stage(
            "dispatcher.deliver",
            parent=payload.trace,
            channel=payload.channel.value,
            message_id=payload.message_id,
            entry_id=entry_id,
        ) as span:
            outcome = await self._deliver(entry_id, fields, payload)
            span.set_attribute("outcome", str(outcome))
        if outcome is Outcome.SENT:
            self._count_sent(payload)
        log.info("dispatch", entry_id=entry_id, message_id=str(payload.message_id), outcome=str(outcome))
        return outcome

    @staticmethod
    def _count_sent(payload: OutboundPayload) -> None:
        channel = payload.channel.value
        metrics.inc("ema_messages_total", channel=channel, brand=str(payload.brand_id), direction="outbound")
        started = received_at(payload.trace)
        if started is not None:  # wall clocks of two hosts: good to the clock skew between them
            metrics.observe("ema_message_latency_seconds", max(0.0, time.time() - started), channel=channel)

    async def _deliver(self, entry_id: str, fields: dict[str, str], payload: OutboundPayload) -> Outcome:
        row = await self._claim(payload)
        if row is None:
            async with self._sessionmaker() as session:
                existing = await repo.get_delivery(session, message_id=payload.message_id)
            if existing is not None and existing.status != "pending":
                await self._ack(entry_id)
                return Outcome.ALREADY_DONE
            return Outcome.BUSY
        try:
            account = await self._prepare(payload, row)
        except _Permanent as exc:
            return await self._fail(entry_id, fields, payload, reason=exc.reason)
        except _Held as held:
            # Never sent and never dead-lettered: the agents see the reason on the message.
            log.warning("delivery_held", message_id=str(payload.message_id), reason=held.reason)
            await self._finish(payload, status="held", error=held.reason)
            await self._ack(entry_id)
            return Outcome.HELD
        except CredentialsUnavailable as exc:
            # A configuration fault (the key that encrypted the connection is missing): the reply waits
            # for the operator instead of being dead-lettered; its lease expires and a later pass retries.
            log.error(
                "delivery_credentials_unavailable", message_id=str(payload.message_id), error=exc.message
            )
            return Outcome.DEFERRED
        if account is None:
            await self._finish(payload, status="skipped", error="conversation is owned by a human")
            await self._ack(entry_id)
            return Outcome.SKIPPED
        return await self._send(entry_id, fields, payload, row, account)

    async def _claim(self, payload: OutboundPayload) -> Delivery | None:
        async with self._sessionmaker() as session:
            row = await repo.claim_delivery(
                session,
                message_id=payload.message_id,
                tenant_id=payload.tenant_id,
                brand_id=payload.brand_id,
                conversation_id=payload.conversation_id,
                channel=payload.channel,
                lease_s=self._cfg.lease_s,
            )
            await session.commit()
        return row

    async def _prepare(self, payload: OutboundPayload, row: Delivery) -> RecipientConfig | None:
        """The account to send from, None for a bot reply that must not be sent; :class:`_Permanent` else."""
        if row.sending_since is not None:
            log.warning("delivery_uncertain", message_id=str(payload.message_id), attempts=row.attempts)
            if not self._cfg.resend_uncertain:
                raise _Permanent("uncertain: an earlier attempt crashed while sending")
        if row.attempts > self._cfg.max_attempts:
            raise _Permanent(f"gave up after {row.attempts - 1} attempts: {row.last_error}")
        async with self._sessionmaker() as session:
            if payload.sender == "bot":
                try:
                    conversation = await repo.get_conversation(
                        session, conversation_id=payload.conversation_id
                    )
                except NotFound:
                    raise _Permanent("unknown conversation") from None
                # A person owns it: bot replies drafted before that are dropped, but not the message
                # that handed it over (written with the state change: "I'll connect you with...").
                if conversation.state != ConversationState.BOT.value and not payload.handoff:
                    return None
            config = await repo.find_brand_channel_config(
                session, brand_id=payload.brand_id, channel=payload.channel
            )
            # Only channels with a customer-service window need the customer's last message.
            last = (
                await repo.last_inbound_at(session, conversation_id=payload.conversation_id)
                if payload.channel in WINDOWED_CHANNELS
                else None
            )
        if config is None or config.tenant_id != payload.tenant_id:
            raise _Permanent(f"brand has no enabled {payload.channel} account")
        if payload.channel not in self._senders.channels:
            raise _Permanent(f"no sender for channel {payload.channel}")
        route = repo.route_of(config, self._cipher)  # the connection's own access token / bot token
        verdict = window_decision(
            channel=payload.channel,
            sender=payload.sender,
            last_inbound_at=last,
            now=datetime.now(UTC),
            settings=dict(config.settings or {}),
        )
        if verdict.mode == "held":
            raise _Held(verdict.reason)
        if payload.attachment is not None and verdict.mode == "template":
            raise _Held(
                "outside WhatsApp's 24-hour window only a template may go, and a file is not one: "
                "the customer must write first"
            )
        return RecipientConfig(
            channel=payload.channel,
            external_id=config.external_id,
            settings=config.settings,
            credentials=route.credentials,
            window=verdict.mode,
            template=None if verdict.template is None else verdict.template.model_dump(),
        )

    async def _file(self, media_id: uuid.UUID, tenant_id: uuid.UUID) -> bytes:
        """The bytes of an agent's file, from the media store (:class:`_Permanent` when it is gone)."""
        async with self._sessionmaker() as session:
            row = await repo.get_media(session, media_id=media_id)
            data = await self._store.get(session, row) if row is not None else None
        if row is None or data is None or row.tenant_id != tenant_id:
            raise _Permanent("the attached file is no longer stored")
        return data

    async def _send(
        self,
        entry_id: str,
        fields: dict[str, str],
        payload: OutboundPayload,
        row: Delivery,
        account: RecipientConfig,
    ) -> Outcome:
        sender = self._senders.get(payload.channel)
        async with self._sessionmaker() as session:
            await repo.mark_delivery_sending(session, message_id=payload.message_id)
            await session.commit()
        progress = row.parts_sent
        ids = list(row.provider_message_ids or [])
        try:
            meta = payload.attachment
            file = await self._file(meta.media_id, payload.tenant_id) if meta is not None else None
        except _Permanent as exc:
            return await self._fail(entry_id, fields, payload, reason=exc.reason, parts=progress, ids=ids)

        channel = payload.channel.value

        async def attempt() -> int:
            nonlocal progress
            try:
                with stage(
                    "provider.send", stage_label="provider_send", channel=channel, start_part=progress
                ):
                    result = await sender.send(
                        payload, recipient_config=account, start_part=progress, file=file
                    )
            except SendError as exc:
                outcome = "permanent" if isinstance(exc, PermanentSendError) else "retryable"
                metrics.inc("ema_outbound_attempts_total", channel=channel, outcome=outcome)
                progress = max(progress, exc.parts_sent)
                ids.extend(exc.provider_message_ids)
                raise
            metrics.inc("ema_outbound_attempts_total", channel=channel, outcome="sent")
            ids.extend(result.provider_message_ids or (result.provider_message_id,))
            return result.parts

        try:
            parts = await retry_async(attempt, policy=self._policy, sleep=self._sleep)
        except PermanentSendError as exc:
            return await self._fail(entry_id, fields, payload, reason=exc.reason, parts=progress, ids=ids)
        except RetryableSendError as exc:
            if row.attempts >= self._cfg.max_attempts:
                reason = f"gave up after {row.attempts} attempts: {exc.message}"
                return await self._fail(entry_id, fields, payload, reason=reason, parts=progress, ids=ids)
            async with self._sessionmaker() as session:
                await repo.release_delivery(
                    session,
                    message_id=payload.message_id,
                    parts_sent=progress,
                    provider_message_ids=ids,
                    error=exc.message,
                )
                await session.commit()
            return Outcome.DEFERRED
        await self._record_sent(payload, parts=parts, ids=ids)
        await self._ack(entry_id)
        return Outcome.SENT

    async def _record_sent(self, payload: OutboundPayload, *, parts: int, ids: list[str]) -> None:
        """The provider has the message: record that, waiting out a database outage (up to the lease or
        30 s, whichever is longer) instead of leaving the entry to be redelivered — which would send it
        again (seen in the Postgres restart chaos test when the outage began right after a send). Giving
        up sooner could only lead to that resend; past the lease another dispatcher may resend anyway."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(self._cfg.lease_s, 30.0)
        delay = 0.2
        while True:
            try:
                await self._mark_sent(payload, parts=parts, ids=ids)
                return
            except SQLAlchemyError as exc:
                left = deadline - loop.time()
                if left <= 0:
                    raise
                log.warning(
                    "delivery_record_retry", message_id=str(payload.message_id), error=type(exc).__name__
                )
                await self._sleep(min(delay, left))  # the last try lands on the deadline, not before it
                delay = min(delay * 2, 2.0)

    async def _mark_sent(self, payload: OutboundPayload, *, parts: int, ids: list[str]) -> None:
        await self._finish(payload, status="sent", parts=parts, ids=ids)

    async def _fail(
        self,
        entry_id: str,
        fields: dict[str, str],
        payload: OutboundPayload,
        *,
        reason: str,
        parts: int | None = None,
        ids: list[str] | None = None,
    ) -> Outcome:
        await self._finish(payload, status="failed", error=reason, parts=parts, ids=ids)
        await self._dead_letter(entry_id, fields, reason=reason, payload=payload)
        return Outcome.DEAD_LETTERED

    async def _finish(
        self,
        payload: OutboundPayload,
        *,
        status: str,
        error: str | None = None,
        parts: int | None = None,
        ids: list[str] | None = None,
    ) -> None:
        async with self._sessionmaker() as session:
            await repo.finish_delivery(
                session,
                message_id=payload.message_id,
                status=status,
                parts_sent=parts,
                provider_message_ids=ids,
                error=error,
            )
            await session.commit()

    async def _dead_letter(
        self,
        entry_id: str,
        fields: dict[str, str],
        *,
        reason: str,
        payload: OutboundPayload | None = None,
    ) -> None:
        """XADD the original ``data`` with why it was given up, and XACK, in one MULTI (nothing is lost)."""
        record = {"data": fields.get("data", json.dumps(fields)), "reason": reason}
        record["entry_id"] = entry_id
        if payload is not None:
            record["message_id"] = str(payload.message_id)
            record["channel"] = str(payload.channel)
        await self._consumer.dead_letter(entry_id, record)
        log.warning("dead_lettered", entry_id=entry_id, reason=reason)

    async def _ack(self, entry_id: str) -> None:
        await self._consumer.ack(entry_id)
