"""Operator commands against real Redis: stream report, dead-letter listing and replay."""

from __future__ import annotations

import json
import uuid

import pytest
import redis.asyncio as aioredis

from common.config import Settings
from serve_apps.admin import dead_letters, replay_dead, stream_report

pytestmark = pytest.mark.integration


async def test_replay_moves_dead_letters_back_in_order(redis_url: str, redis_prefix: str) -> None:
    settings = Settings(redis={"url": redis_url, "key_prefix": f"{redis_prefix}:{uuid.uuid4().hex[:6]}"})
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    live, dead = settings.redis.key("stream", "outbound"), settings.redis.key("stream", "outbound-dead")
    try:
        await client.xgroup_create(live, "dispatchers", id="0", mkstream=True)
        for i in range(3):
            await client.xadd(dead, {"data": json.dumps({"n": i}), "reason": "400 bad recipient"})
        await client.xadd(dead, {"reason": "no payload"})  # malformed: never replayed

        listed = await dead_letters(client, settings, "outbound", 10)
        assert [e["reason"] for e in listed[:3]] == ["400 bad recipient"] * 3

        assert await replay_dead(client, settings, "outbound", 10) == 3
        replayed = [json.loads(f["data"])["n"] for _, f in await client.xrange(live)]
        assert replayed == [0, 1, 2]
        assert await client.xlen(dead) == 1

        report = {row["stream"]: row for row in await stream_report(client, settings)}
        assert report["outbound"]["length"] == 3
        assert report["outbound"]["groups"][0]["name"] == "dispatchers"
        assert report["outbound"]["groups"][0]["lag"] == 3
        assert report["outbound-dead"]["length"] == 1
    finally:
        await client.delete(live, dead)
        await client.aclose()
