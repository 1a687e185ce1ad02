"""Consumer of the ``inbound`` stream: drafts and stores the reply of every accepted webhook message.

Each entry is an :class:`common.schemas.InboundQueued` (JSON in field ``data``). One pass
(:meth:`InboundWorker.run_once`):

1. ``XAUTOCLAIM`` entries another consumer left pending for longer than ``min_idle_ms`` (it crashed or
   gave up for now), then ``XREADGROUP >`` new ones;
2. ``orchestrator.process_stored(inbound_id)`` with bounded retries and backoff for retryable errors;
3. ``XACK`` on success. A permanent error, an undecodable entry, or an entry delivered
   ``max_deliveries`` times goes to the dead-letter stream ``inbound-dead`` (with the reason) and is
   acknowledged in the same ``MULTI``. A retryable error that outlives the in-process retries leaves the
   entry pending: it is reclaimed after ``min_idle_ms``, and Redis counts that as another delivery.

``process_stored`` is idempotent (one reply per inbound message, enforced by a unique index), so a
reclaimed entry whose first consumer did finish is answered with the stored reply, never twice. Errors
that are not ours (a crashed replica, a dropped connection) are treated as retryable: retrying is safe,
and the delivery bound stops a poison message.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from common.config import RedisSettings
from common.domain import OutboundResponse
from common.errors import AssistantError, StreamUnavailable, unwrap_remote
from common.logging import get_logger
from common.observability import BacklogReporter, stage
from common.retry import RetryPolicy, retry_async
from common.schemas import InboundQueued
from common.streams import INBOUND_STREAM, StreamConsumer, StreamEntry

log = get_logger(__name__)

INBOUND_DEAD_STREAM = "inbound-dead"

ProcessFn = Callable[[uuid.UUID], Awaitable[OutboundResponse]]


@dataclass(frozen=True)
class WorkerConfig:
    """Consumer-group settings; one ``consumer`` name per worker process (replica)."""

    consumer: str
    group: str = "inbound-workers"
    batch_size: int = 8
    #: Messages drafted at once by :meth:`InboundWorker.run_forever`; a slot is refilled as soon as one
    #: finishes, so one slow draft does not hold back the next read (as a whole batch would).
    max_in_flight: int = 16
    claim_interval_s: float = 5.0
    block_ms: int = 2000
    min_idle_ms: int = 60_000
    max_deliveries: int = 5
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=3, base_delay_s=0.5))
    error_backoff_s: float = 1.0


@dataclass
class RunStats:
    """What one pass did."""

    processed: int = 0
    dead_lettered: int = 0
    left_pending: int = 0
    claimed: int = 0


def is_retryable(exc: BaseException) -> bool:
    """Our errors say whether retrying helps; anything else (crash, lost connection) is retried."""
    original = unwrap_remote(exc)
    if isinstance(original, AssistantError):
        return original.retryable
    return True


def describe(exc: BaseException) -> str:
    """A short reason for the dead-letter entry (type, code and message; no stack trace)."""
    original = unwrap_remote(exc)
    if isinstance(original, AssistantError):
        return f"{original.code}: {original.message}"
    return f"{type(original).__name__}: {original}"


class InboundWorker:
    """Reads the ``inbound`` stream through a consumer group and answers each stored message once."""

    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        redis_settings: RedisSettings,
        process: ProcessFn,
        config: WorkerConfig,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._process = process
        self._config = config
        self._sleep = sleep
        self._consumer = StreamConsumer(
            redis,
            redis_settings,
            stream=INBOUND_STREAM,
            dead_stream=INBOUND_DEAD_STREAM,
            group=config.group,
            consumer=config.consumer,
        )
        self.stream = self._consumer.stream
        self.dead_stream = self._consumer.dead_stream
        self._backlog = BacklogReporter(redis, key=self.stream, stream=INBOUND_STREAM, group=config.group)

    async def ensure_group(self) -> None:
        """Create the consumer group (and stream) if missing; from id 0 so earlier entries count too."""
        await self._consumer.ensure_group()

    async def run_once(self) -> RunStats:
        """Reclaim stale entries, read new ones (blocking up to ``block_ms``), process them all."""
        stats = RunStats()
        try:
            await self.ensure_group()
            claimed = await self._claim_stale()
            stats.claimed = len(claimed)
            fresh = await self._read_new(block=not claimed)
        except RedisError as exc:
            raise StreamUnavailable(f"inbound stream unavailable: {exc}") from exc
        outcomes = await asyncio.gather(*(self._handle(entry) for entry in [*claimed, *fresh]))
        for outcome in outcomes:
            setattr(stats, outcome, getattr(stats, outcome) + 1)
        return stats

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Keep up to ``max_in_flight`` messages drafting until ``stop`` is set, then finish them.

        Each free slot is refilled at once from the stream (stale entries of crashed consumers first,
        checked every ``claim_interval_s``), so throughput is not bounded by the slowest draft of a
        batch. An unavailable Redis is waited out, not fatal: unacknowledged entries stay pending.
        """
        cfg = self._config
        in_flight: set[asyncio.Task[str]] = set()
        next_claim = 0.0
        try:
            while not stop.is_set():
                free = cfg.max_in_flight - len(in_flight)
                if free <= 0:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    await self.ensure_group()
                    claimed: list[StreamEntry] = []
                    now = asyncio.get_running_loop().time()
                    if now >= next_claim:
                        claimed = await self._claim_stale(count=free)
                        next_claim = now + cfg.claim_interval_s
                    fresh: list[StreamEntry] = []
                    if len(claimed) < free:
                        fresh = await self._read_new(block=not claimed, count=free - len(claimed))
                    await self._backlog.maybe_report()
                except (StreamUnavailable, RedisError) as exc:
                    # Redis down or restarting (XACK, XADD to the dead-letter stream, XINFO): wait it out;
                    # unacknowledged entries stay pending and are reclaimed, so nothing is lost.
                    log.warning("inbound_worker_redis_unavailable", error=str(exc))
                    await self._sleep(cfg.error_backoff_s)
                    continue
                for entry in [*claimed, *fresh]:
                    task = asyncio.create_task(self._handle_logged(entry))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
        finally:
            if in_flight:  # stopping: let the drafts in progress finish (their entries get acknowledged)
                await asyncio.wait(in_flight)

    async def _handle_logged(self, entry: StreamEntry) -> str:
        try:
            return await self._handle(entry)
        except (StreamUnavailable, RedisError) as exc:
            # XACK or the dead-letter XADD failed: the entry stays pending and is reclaimed later.
            log.warning("inbound_worker_redis_unavailable", entry_id=entry.id, error=str(exc))
            return "left_pending"

    async def _claim_stale(self, count: int | None = None) -> list[StreamEntry]:
        cfg = self._config
        claimed = await self._consumer.claim_stale(
            min_idle_ms=cfg.min_idle_ms, count=count or cfg.batch_size, with_deliveries=True
        )
        for entry in claimed:
            log.info("inbound_entry_reclaimed", entry_id=entry.id, deliveries=entry.deliveries)
        return claimed

    async def _read_new(self, *, block: bool, count: int | None = None) -> list[StreamEntry]:
        cfg = self._config
        return await self._consumer.read_new(
            count=count or cfg.batch_size, block_ms=cfg.block_ms if block else None
        )

    async def _handle(self, entry: StreamEntry) -> str:
        """Process one entry; returns the RunStats field to count it under."""
        entry_id, fields, deliveries = entry.id, entry.fields, entry.deliveries
        try:
            queued = InboundQueued.model_validate(json.loads(fields["data"]))
        except (KeyError, ValueError, ValidationError) as exc:
            await self._dead_letter(entry_id, fields, deliveries, f"undecodable entry: {exc}")
            return "dead_lettered"
        if deliveries > self._config.max_deliveries:
            reason = f"delivered {deliveries} times without being acknowledged (worker crashes?)"
            await self._dead_letter(entry_id, fields, deliveries, reason)
            return "dead_lettered"
        # Continues the trace started where the message was accepted (carried in the entry).
        with stage("inbound_worker.process", parent=queued.trace, entry_id=entry_id, deliveries=deliveries):
            try:
                await retry_async(
                    lambda: self._process(queued.inbound_id),
                    policy=self._config.retry,
                    is_retryable=is_retryable,
                    sleep=self._sleep,
                )
            except Exception as exc:  # classified below: permanent → dead letter, retryable → stay pending
                if is_retryable(exc) and deliveries < self._config.max_deliveries:
                    log.warning(
                        "inbound_retry_later", entry_id=entry_id, deliveries=deliveries, error=describe(exc)
                    )
                    return "left_pending"
                await self._dead_letter(entry_id, fields, deliveries, describe(exc))
                return "dead_lettered"
            await self._consumer.ack(entry_id)
            return "processed"

    async def _dead_letter(self, entry_id: str, fields: dict[str, str], deliveries: int, reason: str) -> None:
        record = {
            "entry_id": entry_id,
            "stream": self.stream,
            "reason": reason,
            "deliveries": deliveries,
            "data": fields.get("data"),
        }
        await self._consumer.dead_letter(entry_id, {"data": json.dumps(record)})
        log.error("inbound_dead_lettered", entry_id=entry_id, deliveries=deliveries, reason=reason)
