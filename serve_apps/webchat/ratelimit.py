"""Per-visitor rate limits in Redis: a fixed window counter per (widget, visitor, window).

One ``INCR`` + ``EXPIRE`` in a MULTI per request, so every gateway replica shares the same counters.
A fixed window lets a visitor send up to twice the limit around a window edge; that is accepted here
for one round trip per request (a sliding log would cost a sorted set per visitor).

When Redis cannot be reached the limiter fails closed (503): the gateway cannot deliver replies over
SSE without Redis anyway, and letting unmetered traffic reach the LLM is the costlier failure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common.errors import RateLimited, StreamUnavailable


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one counted request."""

    allowed: bool
    count: int
    limit: int
    retry_after_s: int


class FixedWindowLimiter:
    """``limit`` requests per ``window_s`` seconds per subject."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        key_prefix: str,
        limit: int,
        window_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        self._limit = limit
        self._window_s = window_s
        self._clock = clock

    async def hit(self, subject: str) -> RateDecision:
        """Count one request for ``subject`` and say whether it is within the limit."""
        now = self._clock()
        window = math.floor(now / self._window_s)
        key = f"{self._prefix}:{subject}:{window}"
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, self._window_s + 1)
                count, _ = await pipe.execute()
        except RedisError as exc:
            raise StreamUnavailable(f"rate limiter unavailable: {exc}") from exc
        retry_after = max(1, math.ceil((window + 1) * self._window_s - now))
        return RateDecision(
            allowed=int(count) <= self._limit, count=int(count), limit=self._limit, retry_after_s=retry_after
        )

    async def check(self, subject: str) -> None:
        """:meth:`hit`, raising :class:`RateLimited` (with ``retry_after_s`` in details) when over."""
        decision = await self.hit(subject)
        if not decision.allowed:
            raise RateLimited(
                "too many requests from this visitor; retry later",
                details={
                    "retry_after_s": decision.retry_after_s,
                    "limit": decision.limit,
                    "window_s": self._window_s,
                },
            )
