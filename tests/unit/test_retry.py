"""Bounded retries: retryable errors are retried with backoff, permanent ones are not."""

from __future__ import annotations

import pytest

from common.errors import InvalidInput, LLMError, RateLimited
from common.retry import RetryPolicy, retry_async, retry_sync


async def test_retries_retryable_until_success() -> None:
    calls, sleeps = [], []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise LLMError("transient")
        return "ok"

    async def sleep(s: float) -> None:
        sleeps.append(s)

    assert await retry_async(flaky, policy=RetryPolicy(attempts=3, base_delay_s=0.1), sleep=sleep) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2
    assert all(0 <= s <= 0.1 * 2 for s in sleeps)


async def test_permanent_error_is_raised_at_once() -> None:
    calls = []

    async def bad() -> None:
        calls.append(1)
        raise InvalidInput("no")

    async def sleep(_: float) -> None:
        raise AssertionError("must not sleep")

    with pytest.raises(InvalidInput):
        await retry_async(bad, policy=RetryPolicy(attempts=5), sleep=sleep)
    assert len(calls) == 1


def test_gives_up_after_attempts_and_honours_retry_after() -> None:
    sleeps: list[float] = []

    def limited() -> None:
        raise RateLimited("slow down", details={"retry_after_s": 1.5})

    with pytest.raises(RateLimited):
        retry_sync(limited, policy=RetryPolicy(attempts=3, max_delay_s=10), sleep=sleeps.append)
    assert sleeps == [1.5, 1.5]


def test_delay_is_capped() -> None:
    policy = RetryPolicy(base_delay_s=1, max_delay_s=2)
    assert all(policy.delay(10) <= 2 for _ in range(50))
    assert policy.delay(1, retry_after_s=100) == 2
