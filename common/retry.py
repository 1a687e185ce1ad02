"""Bounded retries with exponential backoff and full jitter.

Only errors that say they are retryable (``AssistantError.retryable``, or what ``is_retryable`` accepts)
are tried again; a permanent error is raised at once. A server's ``Retry-After`` hint, when the error
carries one in ``details["retry_after_s"]``, replaces the computed delay (capped by ``max_delay_s``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from common.errors import AssistantError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how long to wait between tries."""

    attempts: int = 3
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0

    def delay(self, attempt: int, *, retry_after_s: float | None = None) -> float:
        """Delay before try ``attempt + 1`` (attempt counts from 1)."""
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_delay_s)
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        # Full jitter spreads retries of many clients that failed together.
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography


def default_is_retryable(exc: BaseException) -> bool:
    """Our own errors say so; anything else is treated as permanent."""
    return isinstance(exc, AssistantError) and exc.retryable


def _retry_after(exc: BaseException) -> float | None:
    if isinstance(exc, AssistantError):
        value = exc.details.get("retry_after_s")
        if isinstance(value, int | float):
            return float(value)
    return None


async def retry_async(
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    is_retryable: Callable[[BaseException], bool] = default_is_retryable,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Call ``fn`` until it succeeds, fails permanently, or ``policy.attempts`` are used up."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return await fn()
        except Exception as exc:
            if attempt >= policy.attempts or not is_retryable(exc):
                raise
            await sleep(policy.delay(attempt, retry_after_s=_retry_after(exc)))
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


def retry_sync(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    is_retryable: Callable[[BaseException], bool] = default_is_retryable,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Blocking twin of :func:`retry_async`."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt >= policy.attempts or not is_retryable(exc):
                raise
            sleep(policy.delay(attempt, retry_after_s=_retry_after(exc)))
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover
