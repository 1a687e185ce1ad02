"""The one consumer-group consumer every worker uses (:class:`common.streams.StreamConsumer`), real Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from common.config import RedisSettings
from common.metrics import REGISTRY
from common.streams import StreamConsumer, StreamPublisher, stream_key

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def settings(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisSettings]:
    yield RedisSettings(url=redis_url, key_prefix=f"{redis_prefix}:{uuid.uuid4().hex[:6]}")


async def _client(settings: RedisSettings, protocol: int = 2) -> aioredis.Redis:
    return aioredis.Redis.from_url(settings.url or "", decode_responses=True, protocol=protocol)


def _dead_letters(stream: str) -> float:
    return REGISTRY.get_sample_value("ema_dead_letters_total", {"stream": stream}) or 0.0


def _consumer(client: aioredis.Redis, settings: RedisSettings, name: str = "c1") -> StreamConsumer:
    return StreamConsumer(client, settings, stream="jobs", dead_stream="jobs-dead", group="g", consumer=name)


def test_keys_have_one_spelling() -> None:
    settings = RedisSettings(key_prefix="ema")
    publisher = StreamPublisher(None, settings)  # type: ignore[arg-type]  # only names are asked for
    assert stream_key(settings, "inbound") == "ema:stream:inbound" == publisher.stream_name("inbound")


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
async def test_read_ack_and_redelivery(settings: RedisSettings, protocol: int) -> None:
    client = await _client(settings, protocol)
    try:
        consumer = _consumer(client, settings)
        await consumer.ensure_group()
        await _consumer(client, settings, "c2").ensure_group()  # BUSYGROUP from a second consumer is fine
        publisher = StreamPublisher(client, settings)
        first = await publisher.publish("jobs", {"n": 1})
        second = await publisher.publish("jobs", {"n": 2})

        entries = await consumer.read_new(count=10, block_ms=None)
        assert [(e.id, json.loads(e.fields["data"])["n"], e.deliveries) for e in entries] == [
            (first, 1, 1),
            (second, 2, 1),
        ]
        assert await consumer.read_new(count=10, block_ms=None) == []  # nothing new

        await consumer.ack(first)
        # The unacknowledged one is taken over by another consumer once idle, with its delivery count.
        await asyncio.sleep(0.05)
        thief = _consumer(client, settings, "c2")
        claimed = await thief.claim_stale(min_idle_ms=10, count=10, with_deliveries=True)
        assert [(e.id, e.deliveries) for e in claimed] == [(second, 2)]
        pending = await client.xpending(consumer.stream, "g")
        assert pending["pending"] == 1
    finally:
        await client.aclose()


async def test_trimmed_pending_entry_is_acknowledged_not_returned(settings: RedisSettings) -> None:
    client = await _client(settings)
    try:
        consumer = _consumer(client, settings)
        entry_id = await StreamPublisher(client, settings).publish("jobs", {"n": 1})
        assert len(await consumer.read_new(count=1, block_ms=None)) == 1
        await client.xdel(consumer.stream, entry_id)  # trimmed while pending
        await asyncio.sleep(0.05)
        assert await consumer.claim_stale(min_idle_ms=10, count=10) == []
        assert (await client.xpending(consumer.stream, "g"))["pending"] == 0
    finally:
        await client.aclose()


async def test_dead_letter_appends_and_acknowledges_together(settings: RedisSettings) -> None:
    client = await _client(settings)
    try:
        consumer = _consumer(client, settings)
        entry_id = await StreamPublisher(client, settings).publish("jobs", {"n": 1})
        [entry] = await consumer.read_new(count=1, block_ms=None)
        before = _dead_letters("jobs-dead")

        await consumer.dead_letter(entry.id, {"data": entry.fields["data"], "reason": "poison"})

        letters: Any = await client.xrange(consumer.dead_stream)
        assert [fields for _id, fields in letters] == [{"data": entry.fields["data"], "reason": "poison"}]
        assert (await client.xpending(consumer.stream, "g"))["pending"] == 0
        assert entry.id == entry_id
        assert _dead_letters("jobs-dead") == before + 1
    finally:
        await client.aclose()
