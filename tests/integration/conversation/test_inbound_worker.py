"""The inbound worker against real Redis Streams and the in-process pipeline (Postgres, test doubles for
the embedder and chat model; see test_webhooks)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from sqlalchemy import func, select

from common.conversation.inbound_worker import InboundWorker, WorkerConfig
from common.db.models import MessageLog
from common.domain import Channel, InboundMessage
from common.errors import LLMTimeout, NotFound
from common.retry import RetryPolicy
from tests.integration.gateway.test_webhooks import Env, env_fixture  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration


def make_worker(env: Env, consumer: str, *, process=None, **config) -> InboundWorker:
    return InboundWorker(
        redis=env.backend.redis,
        redis_settings=env.backend.settings.redis,
        process=process or env.backend.orchestrator.process_stored,
        config=WorkerConfig(consumer=consumer, block_ms=50, **config),
    )


async def accept(env: Env, text: str = "Hello?") -> uuid.UUID:
    msg = InboundMessage(
        brand_id=env.brand_id,
        channel=Channel.WHATSAPP,
        customer_id="c-1",
        text=text,
        provider_message_id=f"wamid.{uuid.uuid4().hex}",
    )
    return (await env.backend.orchestrator.accept(msg)).inbound_id


async def replies(env: Env, inbound_id: uuid.UUID) -> int:
    async with env.backend.sessionmaker() as s:
        stmt = select(func.count()).where(MessageLog.in_reply_to == inbound_id)
        return int(await s.scalar(stmt) or 0)


async def pending(worker: InboundWorker, env: Env) -> int:
    info = await env.backend.redis.xpending(worker.stream, "inbound-workers")
    return int(info["pending"])


async def dead_letters(env: Env) -> list[dict]:
    key = env.backend.settings.redis.key("stream", "inbound-dead")
    return [json.loads(f["data"]) for _, f in await env.backend.redis.xrange(key)]


async def outbound_count(env: Env) -> int:
    return int(await env.backend.redis.xlen(env.backend.settings.redis.key("stream", "outbound")))


async def test_queued_message_is_processed_once_and_acked(env: Env) -> None:
    inbound_id = await accept(env)
    worker = make_worker(env, "w1")
    stats = await worker.run_once()
    assert stats.processed == 1 and stats.dead_lettered == 0
    assert await replies(env, inbound_id) == 1 and await outbound_count(env) == 1
    assert await pending(worker, env) == 0
    again = await worker.run_once()
    assert again.processed == 0 and await outbound_count(env) == 1


async def test_crashed_consumers_entry_is_reclaimed_and_answered_once(env: Env) -> None:
    inbound_id = await accept(env)
    # 1.5 s: drafting the reply below, on a loaded 2-core CI machine, must not make the entry idle already.
    survivor = make_worker(env, "survivor", min_idle_ms=1500)
    await survivor.ensure_group()
    # The crashed consumer read the entry and even stored the reply, but died before XACK.
    read = await env.backend.redis.xreadgroup("inbound-workers", "crashed", {survivor.stream: ">"}, count=10)
    assert len(read[0][1]) == 1
    await env.backend.orchestrator.process_stored(inbound_id)
    assert await outbound_count(env) == 1

    early = await survivor.run_once()  # not idle long enough yet: left to its owner
    assert early.claimed == 0 and early.processed == 0 and await pending(survivor, env) == 1
    await asyncio.sleep(1.6)
    late = await survivor.run_once()
    assert late.claimed == 1 and late.processed == 1
    assert await pending(survivor, env) == 0
    assert await replies(env, inbound_id) == 1 and await outbound_count(env) == 1


async def test_crashed_consumer_without_reply_gets_answered_by_the_reclaimer(env: Env) -> None:
    inbound_id = await accept(env)
    survivor = make_worker(env, "survivor", min_idle_ms=50)
    await survivor.ensure_group()
    await env.backend.redis.xreadgroup("inbound-workers", "crashed", {survivor.stream: ">"}, count=10)
    await asyncio.sleep(0.1)
    assert (await survivor.run_once()).processed == 1
    assert await replies(env, inbound_id) == 1 and await pending(survivor, env) == 0


async def test_retryable_failure_dead_letters_after_max_deliveries(env: Env) -> None:
    inbound_id = await accept(env)
    calls: list[uuid.UUID] = []

    async def always_times_out(iid: uuid.UUID):
        calls.append(iid)
        raise LLMTimeout("model did not answer")

    async def no_sleep(_: float) -> None:
        return None

    worker = make_worker(
        env,
        "w1",
        process=always_times_out,
        min_idle_ms=20,
        max_deliveries=3,
        retry=RetryPolicy(attempts=2, base_delay_s=0.01),
    )
    worker._sleep = no_sleep
    outcomes = []
    for _ in range(10):
        stats = await worker.run_once()
        outcomes.append((stats.left_pending, stats.dead_lettered))
        if stats.dead_lettered:
            break
        await asyncio.sleep(0.05)
    assert outcomes == [(1, 0), (1, 0), (0, 1)]
    assert calls == [inbound_id] * 6  # 3 deliveries x 2 tries each
    [dead] = await dead_letters(env)
    assert dead["deliveries"] == 3 and dead["reason"].startswith("dependency_unavailable: model did not")
    assert json.loads(dead["data"])["inbound_id"] == str(inbound_id)
    assert await pending(worker, env) == 0 and await replies(env, inbound_id) == 0


async def test_permanent_failure_is_dead_lettered_at_once(env: Env) -> None:
    await accept(env)
    calls = 0

    async def gone(iid: uuid.UUID):
        nonlocal calls
        calls += 1
        raise NotFound("unknown inbound message")

    worker = make_worker(env, "w1", process=gone)
    assert (await worker.run_once()).dead_lettered == 1
    assert calls == 1 and (await dead_letters(env))[0]["reason"].startswith("not_found")
    # An entry that is not an InboundQueued cannot be processed either.
    await env.backend.redis.xadd(worker.stream, {"data": "not json"})
    assert (await worker.run_once()).dead_lettered == 1
    assert "undecodable" in (await dead_letters(env))[1]["reason"]
    assert await pending(worker, env) == 0


async def test_run_forever_stops_on_event(env: Env) -> None:
    inbound_id = await accept(env)
    worker = make_worker(env, "w1")
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run_forever(stop))
    for _ in range(100):
        if await replies(env, inbound_id):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, timeout=2)
    assert await replies(env, inbound_id) == 1


async def test_a_slow_draft_does_not_hold_back_the_messages_behind_it(env: Env) -> None:
    """Slots are refilled as drafts finish: with 2 in flight, one stuck draft leaves the other slot
    answering every later message (a batch of 2 would wait for the stuck one each time)."""
    slow = await accept(env, "slow one")
    quick = [await accept(env, f"quick {i}") for i in range(5)]
    release = asyncio.Event()
    done: list[uuid.UUID] = []

    async def process(inbound_id: uuid.UUID):
        if inbound_id == slow:
            await release.wait()
        done.append(inbound_id)
        return await env.backend.orchestrator.process_stored(inbound_id)

    worker = make_worker(env, "w-slots", process=process, max_in_flight=2, batch_size=2)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run_forever(stop))
    for _ in range(200):
        if len(done) == len(quick):
            break
        await asyncio.sleep(0.05)
    assert done == quick  # all five answered while the first message's draft was still stuck
    for _ in range(100):  # the last quick entry is acknowledged just after its draft returns
        if await pending(worker, env) == 1:
            break
        await asyncio.sleep(0.02)
    assert await pending(worker, env) == 1  # only the stuck one
    release.set()
    stop.set()
    await asyncio.wait_for(task, timeout=5)  # stopping waits for the draft in progress
    assert done[-1] == slow and await replies(env, slow) == 1
    assert await pending(worker, env) == 0


@pytest.mark.ray
def test_worker_deployment_consumes_the_stream(redis_url: str, redis_prefix: str) -> None:
    """The Serve deployment starts its loop in __init__ and calls the orchestrator through a handle.

    The orchestrator here is a stand-in deployment (defined inline so Ray pickles it by value) that
    records the ids it was asked to process in a Redis list.
    """
    import ray
    import redis as sync_redis
    from ray import serve

    from common.config import ServiceEndpoints
    from deployments.inbound_worker import InboundWorkerDeployment

    prefix = f"{redis_prefix}:{uuid.uuid4().hex[:6]}"
    seen_key = f"{prefix}:seen"

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class RecordingOrchestrator:
        def __init__(self, url: str, key: str) -> None:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(url, decode_responses=True)
            self._key = key

        async def process_stored(self, inbound_id: uuid.UUID) -> None:
            await self._redis.rpush(self._key, str(inbound_id))

    client = sync_redis.Redis.from_url(redis_url, decode_responses=True)
    stream = f"{prefix}:stream:inbound"
    inbound_id = uuid.uuid4()
    client.xadd(stream, {"data": json.dumps({"inbound_id": str(inbound_id), "brand_id": str(uuid.uuid4())})})
    endpoints = ServiceEndpoints(
        database_url="postgresql+psycopg://unused/db", redis_url=redis_url, redis_key_prefix=prefix
    )
    ray.init(num_cpus=2, include_dashboard=False, namespace=f"test-{uuid.uuid4().hex[:8]}")
    try:
        worker = InboundWorkerDeployment.options(ray_actor_options={"num_cpus": 0})  # type: ignore[attr-defined]
        serve.run(
            worker.bind(RecordingOrchestrator.bind(redis_url, seen_key), endpoints),
            name="w",
            route_prefix=None,
        )
        for _ in range(200):
            if client.lrange(seen_key, 0, -1):
                break
            time.sleep(0.05)
        for _ in range(40):  # the XACK follows the call
            if client.xpending(stream, "inbound-workers")["pending"] == 0:
                break
            time.sleep(0.05)
        assert client.lrange(seen_key, 0, -1) == [str(inbound_id)]
        assert client.xpending(stream, "inbound-workers")["pending"] == 0
    finally:
        serve.shutdown()
        ray.shutdown()
        client.close()
