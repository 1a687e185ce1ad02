"""Relay + dispatcher as one background worker (what the ``dispatcher`` Serve deployment runs).

Plain asyncio so it runs the same in a Serve replica, in a script, or in a test; one consumer name per
worker (hostname + pid by default) so Redis can tell replicas apart and XAUTOCLAIM can take over from
a dead one.
"""

from __future__ import annotations

import asyncio
import os
import socket

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.channels.registry import SenderRegistry, build_registry
from common.config import Settings
from common.delivery.dispatcher import OutboundDispatcher
from common.logging import get_logger
from common.outbox import OutboxRelay
from common.streams import StreamPublisher

log = get_logger(__name__)


def default_consumer_name() -> str:
    """``<host>-<pid>``: unique per live process, stable for its lifetime."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _log_death(task: asyncio.Task[None]) -> None:
    # The health check only sees that a loop ended; this says why (else the exception is lost).
    if not task.cancelled() and task.exception() is not None:
        log.error("delivery_loop_died", loop=task.get_name(), error=repr(task.exception()))


class DeliveryWorker:
    """Runs :class:`OutboxRelay` and :class:`OutboundDispatcher` until :meth:`stop`."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: aioredis.Redis,
        senders: SenderRegistry | None = None,
        consumer: str | None = None,
    ) -> None:
        self._settings = settings
        self._senders = senders or build_registry(settings, redis=redis)
        self.relay = OutboxRelay(
            sessionmaker=sessionmaker,
            publisher=StreamPublisher(redis, settings.redis),
            batch_size=settings.delivery.relay_batch_size,
        )
        self.dispatcher = OutboundDispatcher(
            settings=settings,
            sessionmaker=sessionmaker,
            redis=redis,
            senders=self._senders,
            consumer=consumer or default_consumer_name(),
        )
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start both loops on the running event loop."""
        interval = self._settings.delivery.relay_interval_s
        self._tasks = [
            asyncio.create_task(self.relay.run(self._stop, interval_s=interval), name="outbox-relay"),
            asyncio.create_task(self.dispatcher.run(self._stop), name="outbound-dispatcher"),
        ]
        for task in self._tasks:
            task.add_done_callback(_log_death)

    def healthy(self) -> bool:
        """Both loops are still running."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def stop(self) -> None:
        """Let both loops finish their current pass, then close the senders' HTTP client."""
        self._stop.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._senders.aclose()
