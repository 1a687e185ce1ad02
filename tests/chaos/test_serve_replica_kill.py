"""Fault: a gateway replica and an orchestrator replica are killed mid-load (the real Serve application).

Each replica actor is found through ``ray.util.state`` and killed with ``ray.kill(no_restart=False)``;
the Serve controller replaces it. WhatsApp webhooks signed like Meta's keep arriving (open loop, retried
like a provider on any non-2xx or no answer); replies go to the provider SIMULATOR. Counted at the end:
every webhook acknowledged 2xx has exactly one inbound row, one reply row and one send.

Per kill the test prints the error window (non-2xx answers seen and the seconds between the first and
the last) and the recovery time (kill → the deployment reports HEALTHY again with a new replica).
The brand has no knowledge, so each reply is its fallback and the LLM (the bench stub) is not on the
path: what is measured is the platform's failover, not generation.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select

from bench.llm_stub import StubServer
from common.config import ServiceEndpoints, Settings
from common.db import migrate
from common.db.models import MessageLog
from common.db.session import make_engine, make_sessionmaker
from deployments.replica import SERVE_LATENCY_ENV
from pipelines.demo import SIM_PHONE_NUMBER_ID
from serve_apps.simulator.server import SimulatorServer
from serve_apps.simulator.webhooks import sign_meta, whatsapp_message, whatsapp_update
from tests.chaos.harness import Ack, figure
from tests.conftest import listen_port
from tests.fakes.pipeline import seed_demo_world

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.chaos]

SECRETS = {
    "CHANNELS__META_APP_SECRET": "chaos-serve-meta-secret",
    "CHANNELS__META_ACCESS_TOKEN": "chaos-serve-meta-token",
    "CHANNELS__TELEGRAM_BOT_TOKEN": "4242424242:chaos-bot-token",
    "CHANNELS__TELEGRAM_SECRET_TOKEN": "chaos-telegram-secret",
}
RATE_PER_S = 5.0


@dataclass
class Kill:
    deployment: str
    at: float
    recovered_s: float | None = None


@pytest.fixture(scope="module")
def serve_app(
    make_database: Callable[[], str], redis_url: str, redis_prefix: str, tmp_path_factory
) -> Iterator:
    import ray
    from ray import serve

    from serve_apps.app_builder import AppArgs, build_app

    database_url = make_database()
    migrate.upgrade(database_url)

    demo = seed_demo_world(database_url, telegram_bot_id="4242424242")
    with SimulatorServer(port=0) as sim, StubServer(latency_ms=50) as stub:
        endpoints = ServiceEndpoints(
            database_url=database_url,
            redis_url=redis_url,
            redis_key_prefix=f"{redis_prefix}:kill{uuid.uuid4().hex[:6]}",
            qdrant_path=tmp_path_factory.mktemp("qdrant"),
        )
        env = {
            **SERVE_LATENCY_ENV,  # as the launcher runs it
            **SECRETS,
            "CHANNELS__META_GRAPH_URL": sim.url,
            "CHANNELS__TELEGRAM_API_URL": sim.url,
            "LLM_PROVIDER": "openai",
            "LLM_BASE_URL": stub.base_url,
            "LLM_MODEL": "stub",
            "HF_HUB_OFFLINE": "1",
        }
        port = listen_port()
        ray.init(
            num_cpus=8,
            include_dashboard=False,
            namespace=f"chaos-{uuid.uuid4().hex[:8]}",
            runtime_env={"env_vars": env},
        )
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(build_app(AppArgs(endpoints=endpoints)), name=Settings().ray.app_name, route_prefix="/")
            yield f"http://127.0.0.1:{port}", demo, sim, database_url
        finally:
            serve.shutdown()
            ray.shutdown()


def _replica_actor(deployment: str) -> tuple[str, str]:
    """(actor name, namespace) of the live replica of ``deployment`` in our app.

    Named-actor lookup (GCS), not ``ray.util.state``: the state API needs the dashboard, which the
    tests do not start.
    """
    import ray

    prefix = f"SERVE_REPLICA::{Settings().ray.app_name}#{deployment}#"
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(prefix):
            return actor["name"], actor["namespace"]
    raise LookupError(f"no live replica of {deployment}")


def _kill_replica(deployment: str) -> Kill:
    import ray

    name, namespace = _replica_actor(deployment)
    handle = ray.get_actor(name, namespace=namespace)
    kill = Kill(deployment, time.monotonic())
    ray.kill(handle, no_restart=False)
    return kill


def _wait_replaced(kill: Kill, old_id: str, timeout_s: float = 90.0) -> None:
    """Poll until a different replica of the deployment is alive and the deployment is HEALTHY."""
    from ray import serve

    app = Settings().ray.app_name
    while time.monotonic() - kill.at < timeout_s:
        try:
            actor_id, _ = _replica_actor(kill.deployment)
        except LookupError:
            actor_id = None
        status = serve.status().applications[app].deployments[kill.deployment].status
        if actor_id and actor_id != old_id and str(status).endswith("HEALTHY"):
            kill.recovered_s = time.monotonic() - kill.at
            return
        time.sleep(0.25)


async def _fire(client: httpx.AsyncClient, acks: list[Ack], deadline_s: float = 120.0) -> None:
    customer = f"1666{uuid.uuid4().int % 10**7:07d}"
    msg = whatsapp_message(sender=customer, text="Do you ship internationally?")
    ack = Ack(wamid=msg["message"]["id"], customer=customer)
    acks.append(ack)
    raw = httpx.Request(
        "POST", "/", json=whatsapp_update(phone_number_id=SIM_PHONE_NUMBER_ID, messages=[msg])
    )
    body = raw.read()
    headers = {
        "X-Hub-Signature-256": sign_meta(body, SECRETS["CHANNELS__META_APP_SECRET"]),
        "content-type": "application/json",
    }
    stop_at, delay = time.monotonic() + deadline_s, 0.2
    while time.monotonic() < stop_at:
        try:
            status = (await client.post("/webhooks/whatsapp", content=body, headers=headers)).status_code
        except httpx.HTTPError:
            status = 599
        ack.statuses.append((time.monotonic(), status))
        if 200 <= status < 300:
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def _load(base: str, acks: list[Ack], duration_s: float) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30.0) as client:
        tasks = []
        stop_at = time.monotonic() + duration_s
        while time.monotonic() < stop_at:
            tasks.append(asyncio.create_task(_fire(client, acks)))
            await asyncio.sleep(1 / RATE_PER_S)
        await asyncio.gather(*tasks)


async def _count(database_url: str, brand_id: uuid.UUID, wamids: list[str]) -> tuple[int, int]:
    engine = make_engine(database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as s:
            inbound = (
                (
                    await s.execute(
                        select(MessageLog.id).where(
                            MessageLog.brand_id == brand_id,
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
        return len(inbound), int(replies or 0)
    finally:
        await engine.dispose()


def test_killed_gateway_and_orchestrator_replicas_lose_nothing(serve_app) -> None:
    base, demo, sim, database_url = serve_app
    assert httpx.get(f"{base}/readyz", timeout=30).status_code == 200
    acks: list[Ack] = []
    kills: list[Kill] = []

    async def scenario() -> None:
        load = asyncio.create_task(_load(base, acks, duration_s=45))
        for deployment, wait_s in (("orchestrator", 8), ("gateway", 10)):
            await asyncio.sleep(wait_s)
            old_id, _ = await asyncio.to_thread(_replica_actor, deployment)
            kill = await asyncio.to_thread(_kill_replica, deployment)
            kills.append(kill)
            await asyncio.to_thread(_wait_replaced, kill, old_id)
        await load

    asyncio.run(scenario())
    acked = [a for a in acks if a.acked]
    customers = {a.customer for a in acked}
    deadline = time.monotonic() + 120
    sends: dict[str, int] = {}
    while time.monotonic() < deadline:
        sends = {}
        for s in sim.state.sent("whatsapp"):
            if s.recipient in customers:
                sends[s.recipient] = sends.get(s.recipient, 0) + 1
        if set(sends) >= customers:
            break
        time.sleep(1)
    time.sleep(2)  # a duplicate send would arrive within this window
    sends = {}
    for s in sim.state.sent("whatsapp"):
        if s.recipient in customers:
            sends[s.recipient] = sends.get(s.recipient, 0) + 1
    inbound, replies = asyncio.run(_count(database_url, demo.brand.id, [a.wamid for a in acked]))

    for kill in kills:
        later = [k.at for k in kills if k.at > kill.at]
        until = min(later) if later else float("inf")
        bad = [t for a in acks for t, s in a.statuses if not 200 <= s < 300 and kill.at <= t < until]
        codes = sorted(
            {s for a in acks for t, s in a.statuses if not 200 <= s < 300 and kill.at <= t < until}
        )
        figure(
            f"serve-kill-{kill.deployment}",
            non_2xx=len(bad),
            non_2xx_statuses=codes,
            error_window_s=f"{(max(bad) - kill.at) if bad else 0.0:.1f}",
            recovery_s=f"{kill.recovered_s:.1f}" if kill.recovered_s is not None else "none",
        )
    figure(
        "serve-kill-totals",
        webhooks=len(acks),
        acked=len(acked),
        inbound=inbound,
        replies=replies,
        sends=sum(sends.values()),
        duplicate_sends=sum(n - 1 for n in sends.values() if n > 1),
    )
    assert all(k.recovered_s is not None for k in kills), kills
    assert len(acked) == len(acks)  # provider-style redelivery got every webhook through
    n = len(acked)
    assert (inbound, replies, sum(sends.values())) == (n, n, n)
    assert all(v == 1 for v in sends.values())
