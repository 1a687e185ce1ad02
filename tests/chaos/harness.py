"""In-process chaos harness: the gateway app, the inbound worker, the outbox relay and the dispatcher in
one event loop, sending replies to the provider SIMULATOR, so a fault test can stop a backing server under
load and then COUNT what happened.

"Nothing lost" is checked by counting, never by sampling: for every webhook the provider saw answered 2xx
there must be exactly one inbound row, exactly one reply row and exactly one send at the simulator.

Test doubles (named as such): :class:`ConstantEmbedder` (no model load; the brand has no knowledge, so
the pipeline answers with the brand's fallback without generating) unless a test passes its own chat
model and knowledge. The client retries non-2xx answers like a provider does (Meta and Telegram both
redeliver a webhook that was not acknowledged).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from pydantic import SecretStr
from sqlalchemy import func, select

from common.channels.registry import build_registry
from common.config import ChannelSecrets, DeliverySettings, ServiceEndpoints, Settings
from common.conversation.inbound_worker import InboundWorker, WorkerConfig
from common.db import repositories as repo
from common.db.models import MessageLog, OutboxMessage
from common.delivery import OutboundDispatcher, OutboxRelay
from common.domain import Channel, Persona
from common.llm.base import ChatModel
from common.outbox import RelayPass
from common.retry import RetryPolicy
from common.streams import StreamPublisher
from serve_apps.gateway.app import build_gateway_api
from serve_apps.inprocess import InProcessBackend
from serve_apps.simulator import SimulatorServer
from serve_apps.simulator.webhooks import sign_meta, whatsapp_message, whatsapp_update
from tests.fakes.chat import ScriptedChatModel
from tests.fakes.embedding import ConstantEmbedder

APP_SECRET = "chaos-meta-app-secret"
META_TOKEN = "chaos-meta-token"
PHONE_NUMBER_ID = "CHAOS-PNID"
FALLBACK = "Thanks for your message, a colleague will get back to you shortly."


class CountingRelay(OutboxRelay):
    """The real relay, counting the rows it (re-)published: the outbox's catch-up after an outage."""

    published_total = 0

    async def run_once(self) -> RelayPass:
        result = await super().run_once()
        self.published_total += result.published
        return result


@dataclass
class Ack:
    """One webhook as the provider saw it: every answer it got, until a 2xx."""

    wamid: str
    customer: str
    statuses: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, status)

    @property
    def acked(self) -> bool:
        return any(200 <= s < 300 for _, s in self.statuses)


@dataclass
class Counts:
    """What the system holds for the fired webhooks."""

    inbound: int
    replies: int
    sends: int
    duplicate_sends: int
    unanswered: list[str]


def chaos_settings(sim: SimulatorServer, **delivery: object) -> Settings:
    """Settings with the simulator as WhatsApp's Graph API and fast reclaim/retry intervals."""
    fast = {
        "claim_min_idle_ms": 1500,
        # A reply claimed just before an outage is retried once its lease expires (60 s by default):
        # shortened like the other intervals so a run measures recovery, not the lease.
        "lease_s": 5.0,
        "block_ms": 200,
        "relay_interval_s": 0.2,
        "retry_base_delay_s": 0.1,
        "retry_max_delay_s": 1.0,
        **delivery,
    }
    return Settings(
        channels=ChannelSecrets(
            meta_app_secret=SecretStr(APP_SECRET),
            meta_access_token=SecretStr(META_TOKEN),
            meta_graph_url=sim.url,
        ),
        delivery=DeliverySettings.model_validate(fast),
    )


class ChaosStack:
    """Gateway (ASGI, in-process) + inbound worker + relay + dispatcher, one brand on WhatsApp."""

    def __init__(
        self,
        *,
        settings: Settings,
        endpoints: ServiceEndpoints,
        sim: SimulatorServer,
        chat_model: ChatModel | None = None,
    ) -> None:
        self.sim = sim
        self.backend = InProcessBackend(
            settings,
            endpoints,
            embedder=ConstantEmbedder(),
            chat_model=chat_model or ScriptedChatModel("scripted"),
        )
        self.settings = self.backend.settings
        self.brand_id = uuid.uuid4()
        self.tenant_id = uuid.uuid4()
        app = build_gateway_api(self.backend)
        # raise_app_exceptions=False: an unhandled error is the 500 a provider would see, not a test crash.
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://gw"
        )
        self.redis = aioredis.Redis.from_url(self.settings.redis.url or "", decode_responses=True)
        self.senders = build_registry(self.settings)
        self.relay = CountingRelay(
            sessionmaker=self.backend.sessionmaker,
            publisher=StreamPublisher(self.redis, self.settings.redis),
            batch_size=self.settings.delivery.relay_batch_size,
        )
        self.dispatcher = OutboundDispatcher(
            settings=self.settings,
            sessionmaker=self.backend.sessionmaker,
            redis=self.redis,
            senders=self.senders,
            consumer="chaos-dispatcher",
        )
        self.worker = InboundWorker(
            redis=self.redis,
            redis_settings=self.settings.redis,
            process=self.backend.orchestrator.process_stored,
            config=WorkerConfig(
                consumer="chaos-worker",
                block_ms=200,
                min_idle_ms=1500,
                max_deliveries=50,  # outages here are seconds long; a real poison message still stops
                retry=RetryPolicy(attempts=2, base_delay_s=0.1),
                error_backoff_s=0.2,
            ),
        )
        self._stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.acks: list[Ack] = []

    async def seed(self, persona: Persona | None = None) -> None:
        """One tenant, one brand with a WhatsApp number routed to it."""
        async with self.backend.sessionmaker() as s:
            slug = f"chaos-{self.tenant_id.hex[:8]}"
            await repo.upsert_tenant(s, tenant_id=self.tenant_id, slug=slug, name="Chaos")
            await repo.upsert_brand(
                s,
                brand_id=self.brand_id,
                tenant_id=self.tenant_id,
                slug="chaos",
                name="Chaos",
                persona=persona or Persona(fallback_message=FALLBACK),
            )
            await repo.upsert_channel_config(
                s,
                tenant_id=self.tenant_id,
                brand_id=self.brand_id,
                channel=Channel.WHATSAPP,
                external_id=PHONE_NUMBER_ID,
                settings={},
            )
            await s.commit()

    def start_workers(self) -> None:
        """Inbound worker, relay and dispatcher as background tasks (what the Serve workers run)."""
        self.tasks = [
            asyncio.create_task(self.worker.run_forever(self._stop), name="inbound-worker"),
            asyncio.create_task(self.relay.run(self._stop, interval_s=0.2), name="relay"),
            asyncio.create_task(self.dispatcher.run(self._stop), name="dispatcher"),
        ]

    def dead_tasks(self) -> list[str]:
        """Background loops that died (an outage must be waited out, never kill a loop)."""
        return [f"{t.get_name()}: {t.exception()!r}" for t in self.tasks if t.done() and not t.cancelled()]

    async def aclose(self) -> None:
        """Stop the loops, then close every client."""
        self._stop.set()
        for task in self.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=5)
            task.cancel()
        await self.senders.aclose()
        await self.client.aclose()
        await self.redis.aclose()
        await self.backend.aclose()

    # --- the provider side ---------------------------------------------------------------------------

    async def fire_one(self, text: str, *, deadline_s: float = 60.0) -> Ack:
        """One signed WhatsApp webhook, redelivered (with backoff) until it is answered 2xx."""
        customer = f"1555{uuid.uuid4().int % 10**7:07d}"
        msg = whatsapp_message(sender=customer, text=text)
        ack = Ack(wamid=msg["message"]["id"], customer=customer)
        self.acks.append(ack)
        body = whatsapp_update(phone_number_id=PHONE_NUMBER_ID, messages=[msg])
        raw = _dump(body)
        headers = {"X-Hub-Signature-256": sign_meta(raw, APP_SECRET), "content-type": "application/json"}
        stop_at = time.monotonic() + deadline_s
        delay = 0.1
        while time.monotonic() < stop_at:
            try:
                status = (
                    await self.client.post("/webhooks/whatsapp", content=raw, headers=headers)
                ).status_code
            except httpx.HTTPError:
                status = 599  # no answer at all: the provider treats it like a 5xx
            ack.statuses.append((time.monotonic(), status))
            if 200 <= status < 300:
                return ack
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        return ack

    async def load(self, *, rate_per_s: float, duration_s: float, text: str = "Where is my order?") -> None:
        """Open-loop webhook traffic: ``rate_per_s`` new conversations per second for ``duration_s``."""
        pending: list[asyncio.Task[Ack]] = []
        interval = 1.0 / rate_per_s
        stop_at = time.monotonic() + duration_s
        while time.monotonic() < stop_at:
            pending.append(asyncio.create_task(self.fire_one(text)))
            await asyncio.sleep(interval)
        await asyncio.gather(*pending)

    # --- counting ------------------------------------------------------------------------------------

    async def counts(self) -> Counts:
        """Inbound rows, reply rows and simulator sends for the fired webhooks."""
        wamids = [a.wamid for a in self.acks if a.acked]
        async with self.backend.sessionmaker() as s:
            inbound = (
                (
                    await s.execute(
                        select(MessageLog.id).where(
                            MessageLog.brand_id == self.brand_id,
                            MessageLog.direction == "inbound",
                            MessageLog.provider_message_id.in_(wamids),
                        )
                    )
                )
                .scalars()
                .all()
            )
            replies = await s.scalar(
                select(func.count()).where(
                    MessageLog.direction == "outbound", MessageLog.in_reply_to.in_(list(inbound))
                )
            )
        customers = {a.customer for a in self.acks if a.acked}
        sends: dict[str, int] = {}
        for sent in self.sim.state.sent("whatsapp"):
            if sent.recipient in customers:
                sends[sent.recipient] = sends.get(sent.recipient, 0) + 1
        return Counts(
            inbound=len(inbound),
            replies=int(replies or 0),
            sends=sum(sends.values()),
            duplicate_sends=sum(n - 1 for n in sends.values() if n > 1),
            unanswered=sorted(customers - set(sends)),
        )

    async def wait_all_sent(self, *, timeout_s: float) -> Counts:
        """Poll until every acknowledged webhook has its send at the simulator (or the timeout)."""
        stop_at = time.monotonic() + timeout_s
        counts = await self.counts()
        while counts.unanswered and time.monotonic() < stop_at:
            await asyncio.sleep(0.25)
            counts = await self.counts()
        return counts

    async def unpublished_outbox(self) -> int:
        """Committed outbox rows not yet on a stream."""
        async with self.backend.sessionmaker() as s:
            n = await s.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
            )
        return int(n or 0)


def error_window(acks: list[Ack]) -> tuple[int, float]:
    """(non-2xx answers, seconds from the first to the last of them)."""
    bad = [t for a in acks for t, s in a.statuses if not 200 <= s < 300]
    return len(bad), (max(bad) - min(bad)) if bad else 0.0


@contextlib.asynccontextmanager
async def chaos_stack(
    *,
    settings: Settings,
    endpoints: ServiceEndpoints,
    sim: SimulatorServer,
    chat_model: ChatModel | None = None,
) -> AsyncIterator[ChaosStack]:
    """A seeded, running :class:`ChaosStack`; closed (loops stopped) on exit."""
    stack = ChaosStack(settings=settings, endpoints=endpoints, sim=sim, chat_model=chat_model)
    try:
        await stack.seed()
        await stack.dispatcher.ensure_group()
        stack.start_workers()
        yield stack
    finally:
        await stack.aclose()


def endpoints_for(database_url: str, redis_url: str, prefix: str, qdrant_dir: Path) -> ServiceEndpoints:
    """Endpoints with a per-test key prefix (streams and consumer groups start empty)."""
    return ServiceEndpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=f"{prefix}:chaos{uuid.uuid4().hex[:6]}",
        qdrant_path=qdrant_dir,
    )


def _dump(payload: object) -> bytes:
    import json

    return json.dumps(payload, separators=(",", ":")).encode()


def figure(name: str, **values: object) -> str:
    """One greppable line per fault test: ``CHAOS <name>: k=v ...`` (printed with ``-s``)."""
    line = f"CHAOS {name}: " + " ".join(f"{k}={v}" for k, v in values.items())
    print(line, flush=True)
    return line
