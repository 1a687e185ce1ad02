"""One WhatsApp message end to end, in-process, traced: webhook → accept → inbound stream → worker →
process_stored → retrieve → LLM → store → outbound stream → dispatcher → provider SIMULATOR.

Real Postgres, Redis and embedded Qdrant (Edge); test doubles (named in test_webhooks) for the embedder
(``ConstantEmbedder``: every text has the same vector, so the brand's one document is always relevant)
and the chat model (``ScriptedChatModel``). Spans come from the in-memory exporter, metrics from
``common.metrics.REGISTRY``, log events from ``structlog.testing.capture_logs``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from pydantic import SecretStr
from structlog.testing import capture_logs

from common import telemetry
from common.channels.registry import build_registry
from common.config import ChannelSecrets, ServiceEndpoints, Settings, TelemetrySettings
from common.conversation.inbound_worker import InboundWorker, WorkerConfig
from common.delivery import OutboundDispatcher, Outcome
from common.domain import Channel
from common.metrics import REGISTRY
from common.observability import BacklogReporter, report_stream_backlog
from common.schemas import KnowledgeDocumentIn, KnowledgeUploadIn
from serve_apps.gateway.app import build_gateway_api
from serve_apps.inprocess import InProcessBackend
from serve_apps.simulator import SimulatorServer
from tests.fakes.chat import ScriptedChatModel
from tests.fakes.embedding import ConstantEmbedder
from tests.integration.gateway.test_webhooks import (
    APP_SECRET,
    TG_SECRET,
    VERIFY_TOKEN,
    raw,
    seed_brand,
    sign,
)

METRICS_TOKEN = "scraper-" + "s" * 32

pytestmark = pytest.mark.integration

META_TOKEN = "sim-meta-token-tracing"
BOT_TOKEN = "778:sim-bot-token-tracing"
ANSWER = "You have 30 days from the delivery date to return an item."
RETURNS = (
    "# Returns\n\n## Return window\n\nYou have 30 days from the delivery date to return an item for a "
    "full refund. Items must be unused and in their original packaging."
)


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer(meta_access_token=META_TOKEN, telegram_bot_token=BOT_TOKEN) as sim:
        yield sim


@pytest.fixture(name="spans")
def spans_fixture():
    telemetry.configure_tracing(TelemetrySettings(exporter="memory"))
    exporter = telemetry.memory_exporter()
    exporter.clear()
    return exporter


@dataclass
class World:
    backend: InProcessBackend
    client: httpx.AsyncClient
    brand_id: uuid.UUID
    sim: SimulatorServer


@pytest_asyncio.fixture(name="world")
async def world_fixture(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, simulator: SimulatorServer
) -> AsyncIterator[World]:
    simulator.state.clear()
    endpoints = ServiceEndpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=f"{redis_prefix}:tr{uuid.uuid4().hex[:6]}",
        qdrant_path=tmp_path / "q",
    )
    settings = Settings(
        api={"metrics_token": METRICS_TOKEN},
        answers={"mode": "generate"},  # the scripted model stands in for a capable one
        channels=ChannelSecrets(
            meta_app_secret=APP_SECRET,
            meta_verify_token=VERIFY_TOKEN,
            telegram_secret_token=TG_SECRET,
            meta_access_token=SecretStr(META_TOKEN),
            meta_graph_url=simulator.url,
            telegram_bot_token=SecretStr(BOT_TOKEN),
            telegram_api_url=simulator.url,
        ),
    )
    backend = InProcessBackend(
        settings, endpoints, embedder=ConstantEmbedder(), chat_model=ScriptedChatModel(ANSWER)
    )
    tenant_id, brand_id = await seed_brand(backend)
    upload = KnowledgeUploadIn(documents=[KnowledgeDocumentIn(uri="returns.md", content=RETURNS)])
    await backend.knowledge.ingest(tenant_id, brand_id, upload)
    app = build_gateway_api(backend)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        try:
            yield World(backend, client, brand_id, simulator)
        finally:
            await backend.aclose()


def whatsapp_body(text: str) -> bytes:
    """The WhatsApp text fixture with a fresh message id, sent just now (the reply is inside the 24-hour
    window), and ``text`` as the customer's words."""
    payload = json.loads(raw(Channel.WHATSAPP, "text"))
    message = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    message["id"] = f"wamid.{uuid.uuid4().hex}"
    message["timestamp"] = str(int(time.time()))
    message["text"]["body"] = text
    return json.dumps(payload).encode()


async def one_message(world: World, text: str) -> list[Outcome]:
    """Webhook in, then one pass of the real inbound worker and of the real dispatcher."""
    body = whatsapp_body(text)
    response = await world.client.post(
        "/webhooks/whatsapp",
        content=body,
        headers={"content-type": "application/json", "x-hub-signature-256": sign(body)},
    )
    assert response.status_code == 200 and response.json()["accepted"] == 1
    backend = world.backend
    worker = InboundWorker(
        redis=backend.redis,
        redis_settings=backend.settings.redis,
        process=backend.orchestrator.process_stored,
        config=WorkerConfig(consumer="tracing-worker", block_ms=50),
    )
    assert (await worker.run_once()).processed == 1
    registry = build_registry(backend.settings)
    try:
        dispatcher = OutboundDispatcher(
            settings=backend.settings,
            sessionmaker=backend.sessionmaker,
            redis=backend.redis,
            senders=registry,
            consumer="tracing-dispatcher",
        )
        await dispatcher.ensure_group()
        return await dispatcher.run_once()
    finally:
        await registry.aclose()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Tree:
    """Finished spans of one trace, looked up by name (and attributes when a name repeats)."""

    def __init__(self, spans: list[Any]) -> None:
        self.spans = spans

    def one(self, name: str, **attributes: Any) -> Any:
        found = [
            s
            for s in self.spans
            if s.name == name and all(s.attributes.get(k) == v for k, v in attributes.items())
        ]
        assert len(found) == 1, (name, attributes, [s.name for s in self.spans])
        return found[0]

    def assert_child(self, child: Any, parent: Any) -> None:
        assert child.parent is not None, child.name
        assert child.parent.span_id == parent.context.span_id, (child.name, parent.name)


STAGES = ("webhook", "accept", "retrieve", "embed", "vector_search", "llm", "store", "publish", "deliver")


async def test_one_message_is_one_trace_from_webhook_to_provider(world: World, spans) -> None:
    brand, channel = str(world.brand_id), Channel.WHATSAPP.value
    before = {
        "in": sample("ema_messages_total", channel=channel, brand=brand, direction="inbound"),
        "out": sample("ema_messages_total", channel=channel, brand=brand, direction="outbound"),
        "prompt": sample("ema_llm_tokens_total", model="scripted", kind="prompt"),
        "llm_calls": sample("ema_llm_latency_seconds_count", model="scripted"),
        "sent": sample("ema_outbound_attempts_total", channel=channel, outcome="sent"),
        "e2e": sample("ema_message_latency_seconds_count", channel=channel),
        "grounded": sum(
            sample("ema_guardrail_decisions_total", rule="groundedness", action=a)
            for a in ("pass", "replace", "fallback", "block")
        ),
        **{s: sample("ema_stage_latency_seconds_count", stage=s) for s in STAGES},
    }

    assert await one_message(world, "How long do I have to return an item?") == [Outcome.SENT]
    assert len(world.sim.state.sent()) == 1

    root = next(s for s in spans.get_finished_spans() if s.name == "gateway.request")
    trace_id = root.context.trace_id
    tree = Tree([s for s in spans.get_finished_spans() if s.context.trace_id == trace_id])
    assert root.parent is None
    assert root.attributes["http.target"] == "/webhooks/whatsapp"
    assert root.attributes["http.status_code"] == 200

    webhook = tree.one("webhook.receive", channel="whatsapp")
    accept = tree.one("orchestrator.accept")
    worker = tree.one("inbound_worker.process")
    process = tree.one("orchestrator.process_stored")
    draft = tree.one("orchestrator.draft")
    retrieve = tree.one("orchestrator.retrieve")
    store = tree.one("orchestrator.store_reply")
    rank = tree.one("orchestrator.rank_sentences")
    deliver = tree.one("dispatcher.deliver", outcome="sent")
    expected = [
        (webhook, root),
        (accept, webhook),
        (tree.one("stream.publish", stream="inbound"), accept),
        (worker, accept),  # across the inbound stream
        (process, worker),
        (draft, process),
        (retrieve, draft),
        (tree.one("knowledge.embed"), retrieve),
        (tree.one("knowledge.vector_search"), retrieve),
        (rank, draft),  # the passages' sentences scored against the question (answering.py)
        (tree.one("knowledge.rank_sentences"), rank),
        (tree.one("llm.chat", model="scripted"), draft),
        (store, process),
        (tree.one("stream.publish", stream="outbound"), process),
        (deliver, store),  # across the outbound stream
        (tree.one("provider.send", channel="whatsapp"), deliver),
    ]
    for child, parent in expected:
        tree.assert_child(child, parent)
    assert len(tree.spans) == len(expected) + 1  # nothing else, and nothing of it in another trace
    assert tree.one("orchestrator.retrieve").attributes["relevant"] == 1

    assert sample("ema_messages_total", channel=channel, brand=brand, direction="inbound") == before["in"] + 1
    assert (
        sample("ema_messages_total", channel=channel, brand=brand, direction="outbound") == before["out"] + 1
    )
    assert sample("ema_llm_tokens_total", model="scripted", kind="prompt") == before["prompt"] + 10
    assert sample("ema_llm_latency_seconds_count", model="scripted") == before["llm_calls"] + 1
    assert sample("ema_outbound_attempts_total", channel=channel, outcome="sent") == before["sent"] + 1
    assert sample("ema_message_latency_seconds_count", channel=channel) == before["e2e"] + 1
    grounded = sum(
        sample("ema_guardrail_decisions_total", rule="groundedness", action=a)
        for a in ("pass", "replace", "fallback", "block")
    )
    assert grounded == before["grounded"] + 1
    for stage in STAGES:
        # publish: the inbound and the outbound stream
        assert sample("ema_stage_latency_seconds_count", stage=stage) >= before[stage] + 1, stage


async def test_gateway_metrics_route_serves_the_process_registry(world: World) -> None:
    assert (await world.client.get("/metrics")).status_code == 401
    response = await world.client.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE ema_stage_latency_seconds histogram" in response.text
    assert "ema_stream_lag_entries" in response.text


async def test_message_bodies_and_secrets_never_reach_the_logs(
    world: World, spans, caplog: pytest.LogCaptureFixture
) -> None:
    text = f"My card is 4111 and the code word is parrot-{uuid.uuid4().hex[:8]}; when does it ship?"
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:
        assert await one_message(world, text) == [Outcome.SENT]
    (sent,) = world.sim.state.sent()
    reply = sent.text
    forbidden = {
        "customer text": text,
        "code word": text.split("code word is ")[1].split(";")[0],
        "reply text": reply,
        "meta app secret": APP_SECRET,
        "meta access token": META_TOKEN,
        "verify token": VERIFY_TOKEN,
        "telegram secret": TG_SECRET,
        "bot token": BOT_TOKEN,
    }
    info_events = [e for e in events if e.get("log_level") in ("debug", "info")]
    assert {e["event"] for e in info_events} >= {"request", "webhook_received", "retrieved", "dispatch"}
    rendered = [repr(e) for e in events] + [r.getMessage() for r in caplog.records]
    for what, value in forbidden.items():
        leaks = [line for line in rendered if value in line]
        assert not leaks, f"{what} logged: {leaks[:2]}"
    request = next(e for e in info_events if e["event"] == "request" and e["path"] == "/webhooks/whatsapp")
    assert len(request["trace_id"]) == 32  # the canonical line points at the trace


async def test_stream_backlog_gauges_follow_xinfo_groups(redis_url: str, redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    key = f"{redis_prefix}:backlog:{uuid.uuid4().hex[:6]}"
    try:
        for n in range(3):
            await client.xadd(key, {"n": str(n)})
        await client.xgroup_create(key, "g", id="0")
        await client.xreadgroup("g", "c", {key: ">"}, count=1)
        reporter = BacklogReporter(client, key=key, stream="backlog-test", group="g", interval_s=60)
        assert await reporter.maybe_report()
        assert sample("ema_stream_pending_entries", stream="backlog-test", group="g") == 1
        assert sample("ema_stream_lag_entries", stream="backlog-test", group="g") == 2
        await client.xreadgroup("g", "c", {key: ">"}, count=5)
        assert not await reporter.maybe_report()  # not before the interval has passed
        await report_stream_backlog(client, key=key, stream="backlog-test", group="g")
        assert sample("ema_stream_pending_entries", stream="backlog-test", group="g") == 3
        assert sample("ema_stream_lag_entries", stream="backlog-test", group="g") == 0
    finally:
        await client.delete(key)
        await client.aclose()


async def test_dead_letters_are_counted_per_stream(world: World) -> None:
    backend = world.backend
    before_in = sample("ema_dead_letters_total", stream="inbound-dead")
    before_out = sample("ema_dead_letters_total", stream="outbound-dead")
    for stream in ("inbound", "outbound"):
        await backend.redis.xadd(backend.settings.redis.key("stream", stream), {"data": "not json"})
    worker = InboundWorker(
        redis=backend.redis,
        redis_settings=backend.settings.redis,
        process=backend.orchestrator.process_stored,
        config=WorkerConfig(consumer="dl-worker", block_ms=50),
    )
    assert (await worker.run_once()).dead_lettered == 1
    registry = build_registry(backend.settings)
    try:
        dispatcher = OutboundDispatcher(
            settings=backend.settings,
            sessionmaker=backend.sessionmaker,
            redis=backend.redis,
            senders=registry,
            consumer="dl-dispatcher",
        )
        await dispatcher.ensure_group()
        assert await dispatcher.run_once() == [Outcome.DEAD_LETTERED]
    finally:
        await registry.aclose()
    assert sample("ema_dead_letters_total", stream="inbound-dead") == before_in + 1
    assert sample("ema_dead_letters_total", stream="outbound-dead") == before_out + 1
