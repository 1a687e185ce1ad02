"""Delivering queued replies in tests: the real dispatcher, run until the outbound stream is drained."""

from __future__ import annotations

from typing import Any

from common.channels.registry import build_registry
from common.delivery import OutboundDispatcher


async def dispatch_all(backend: Any, *, consumer: str = "test", rounds: int = 10) -> None:
    """Send every queued reply of ``backend`` (an in-process backend) with a dispatcher on its settings
    (point the provider URLs at the simulator)."""
    registry = build_registry(backend.settings)
    dispatcher = OutboundDispatcher(
        settings=backend.settings,
        sessionmaker=backend.sessionmaker,
        redis=backend.redis,
        senders=registry,
        consumer=consumer,
    )
    try:
        await dispatcher.ensure_group()
        for _ in range(rounds):
            if not await dispatcher.run_once(block_ms=100):
                break
    finally:
        await registry.aclose()
