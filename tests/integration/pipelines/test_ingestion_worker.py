"""The knowledge upload API and the ingestion worker: real Postgres (large objects, job rows), real Redis
(streams, consumer group, XAUTOCLAIM, Pub/Sub), embedded Qdrant (Edge) and the real embedding model.

The worker's ``run`` function is the real pipeline (``run_ingest``, local engine) except where a test
needs a failure: then it is a named test double (``AlwaysUnavailable``, ``CrashingRun``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from common.access.principal import Scope
from common.config import Settings
from common.db import repositories as repo
from common.db.session import make_engine, make_sessionmaker
from common.errors import DependencyError
from common.streams import stream_key
from pipelines.ingest import Engine, IngestRequest, IngestSummary, ProgressFn, run_ingest
from pipelines.jobs import DEAD_STREAM, GROUP, JOBS_STREAM, KnowledgeIngestJob, enqueue_job, progress_channel
from pipelines.worker import IngestionWorker
from serve_apps.gateway.app import build_gateway_api
from serve_apps.gateway.knowledge import build_knowledge_router
from serve_apps.gateway.readiness import dependencies_ready
from tests.auth import key_headers
from tests.integration.pipelines.test_ingest_pipeline import (
    FAQ_CSV,
    SHIPPING,
    ingest_settings,
    make_brand,
    stored_ids,
)

pytestmark = pytest.mark.integration


@dataclass
class Backend:
    """The part of GatewayBackend the knowledge router uses; orchestrator/knowledge are not called."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: aioredis.Redis
    orchestrator: Any = None
    knowledge: Any = None

    async def ready(self) -> dict[str, bool]:
        return await dependencies_ready(self.sessionmaker, self.redis)


@dataclass
class Env:
    settings: Settings
    backend: Backend
    client: httpx.AsyncClient
    tenant_id: uuid.UUID
    brand_id: uuid.UUID
    engine: AsyncEngine
    runs: list[IngestRequest] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)

    def real_run(self, request: IngestRequest, progress: ProgressFn) -> IngestSummary:
        self.runs.append(request)
        return run_ingest(request, settings=self.settings, engine=Engine.LOCAL, progress=progress)

    def worker(self, run: Any = None, consumer: str = "w1") -> IngestionWorker:
        async def sleep(delay: float) -> None:
            self.delays.append(delay)

        return IngestionWorker(
            settings=self.settings,
            redis=self.backend.redis,
            sessionmaker=self.backend.sessionmaker,
            run=run or self.real_run,
            consumer=consumer,
            sleep=sleep,
        )

    async def job(self, job_id: uuid.UUID) -> dict[str, Any]:
        response = await self.client.get(f"/v1/brands/{self.brand_id}/knowledge/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest_asyncio.fixture
async def env(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> AsyncIterator[Env]:
    tenant_id, brand_id = await asyncio.to_thread(make_brand, database_url)
    settings = ingest_settings(
        database_url, redis_url, f"{redis_prefix}:{uuid.uuid4().hex[:6]}", tmp_path / "q"
    )
    ingestion = settings.ingestion.model_copy(
        update={"max_attempts": 3, "block_ms": 50, "claim_idle_ms": 60_000, "max_upload_bytes": 64 * 1024}
    )
    settings = settings.model_copy(update={"ingestion": ingestion})
    engine = make_engine(database_url, pool_size=2)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    backend = Backend(settings=settings, sessionmaker=make_sessionmaker(engine), redis=redis)
    app = build_gateway_api(backend)
    app.include_router(build_knowledge_router(backend))
    # The gateway maps our errors in its catch-all handler, which Starlette re-raises after responding
    # (a server logs it); like a server, the transport must not re-raise it into the test.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = await key_headers(backend.sessionmaker, tenant_id, Scope.KNOWLEDGE_WRITE, Scope.KNOWLEDGE_READ)
    client = httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers)
    env = Env(settings, backend, client, tenant_id, brand_id, engine)
    await env.worker().ensure_group()
    try:
        yield env
    finally:
        await client.aclose()
        await redis.aclose()
        await engine.dispose()


async def _upload(env: Env, files: list[tuple[str, bytes, str]]) -> httpx.Response:
    return await env.client.post(
        f"/v1/brands/{env.brand_id}/knowledge/uploads",
        files=[("files", (name, data, media)) for name, data, media in files],
    )


async def _queued_job(env: Env, **fields: Any) -> KnowledgeIngestJob:
    """A job row + stream entry, as the API would create them (sources are local paths here)."""
    async with env.backend.sessionmaker() as session:
        row = await repo.create_ingestion_job(
            session, tenant_id=env.tenant_id, brand_id=env.brand_id, source="t"
        )
        await session.commit()
    job = KnowledgeIngestJob(job_id=row.id, tenant_id=env.tenant_id, brand_id=env.brand_id, **fields)
    await enqueue_job(env.backend.redis, env.settings, job)
    return job


async def test_upload_runs_through_the_worker_to_succeeded(env: Env) -> None:
    pubsub = env.backend.redis.pubsub()
    response = await _upload(
        env,
        [
            ("shipping.md", SHIPPING.encode(), "text/markdown"),
            ("faq.csv", FAQ_CSV.encode(), "text/csv"),
            ("broken.pdf", b"%PDF-1.7\nnot a pdf at all\n%%EOF", "application/pdf"),
        ],
    )
    assert response.status_code == 202, response.text
    job_id = uuid.UUID(response.json()["job_id"])
    assert (await env.job(job_id))["status"] == "queued"
    oids = [int(i["location"].split(":")[1]) for i in await _stream_job_items(env)]
    assert len(oids) == 3 and await _blobs_alive(env, oids) == 3
    await pubsub.subscribe(progress_channel(env.settings, job_id))

    assert await env.worker().run_once() == 1

    job = await env.job(job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 1
    assert job["counts"]["documents_in"] == 3
    assert job["counts"]["documents_indexed"] == 2 and job["counts"]["documents_quarantined"] == 1
    assert job["counts"]["quarantined"][0]["uri"] == "upload://broken.pdf"
    assert await _blobs_alive(env, oids) == 0  # released once indexed
    assert len(stored_ids(env.settings, env.tenant_id, env.brand_id, "upload://faq.csv")) == 2
    statuses = [e["status"] for e in await _drain(pubsub)]
    assert statuses[0] == "running" and statuses[-1] == "succeeded"
    await pubsub.aclose()
    pending = await env.backend.redis.xpending(stream_key(env.settings.redis, JOBS_STREAM), GROUP)
    assert pending["pending"] == 0


async def test_upload_refusals_are_machine_readable(env: Env) -> None:
    base = f"/v1/brands/{env.brand_id}/knowledge"
    too_big = await _upload(env, [("big.md", b"# x\n" + b"a" * (64 * 1024), "text/markdown")])
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
    image = await _upload(env, [("logo.png", b"\x89PNG\r\n\x1a\n\x00\x00", "image/png")])
    assert image.status_code == 415 and image.json()["error"]["code"] == "unsupported_media_type"
    local = await env.client.post(f"{base}/uploads", json={"urls": ["/etc/passwd"]})
    assert local.status_code == 400 and local.json()["error"]["code"] == "invalid_input"
    empty = await env.client.post(f"{base}/uploads", json={"urls": []})
    assert empty.status_code == 400
    plain = await env.client.post(f"{base}/uploads", content=b"hello", headers={"content-type": "text/plain"})
    assert plain.status_code == 415
    unknown = await env.client.post(
        f"/v1/brands/{uuid.uuid4()}/knowledge/uploads", json={"urls": ["s3://b/k"]}
    )
    assert unknown.status_code == 404
    missing = await env.client.get(f"{base}/jobs/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    accepted = await env.client.post(f"{base}/uploads", json={"urls": ["s3://kb-bucket/prefix/"]})
    assert accepted.status_code == 202
    assert (await env.job(uuid.UUID(accepted.json()["job_id"])))["source"] == "s3://kb-bucket/prefix/"


class AlwaysUnavailable:
    """Test double: a run that always fails transiently."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: IngestRequest, progress: ProgressFn) -> IngestSummary:
        self.calls += 1
        raise DependencyError("qdrant is down (simulated)")


async def test_transient_failure_retries_with_backoff_then_dead_letters(env: Env) -> None:
    run = AlwaysUnavailable()
    job = await _queued_job(env, sources=["/nowhere"])
    await env.worker(run).run_once()

    row = await env.job(job.job_id)
    assert (row["status"], row["attempts"], run.calls) == ("failed", 3, 3)
    assert "simulated" in row["error"]
    assert len(env.delays) == 2  # slept between tries, not after the last
    assert env.delays[0] <= 1.0 and env.delays[1] <= 2.0  # full jitter below base * 2**(n-1)
    letters = (await env.client.get(f"/v1/brands/{env.brand_id}/knowledge/dead-letters")).json()[
        "dead_letters"
    ]
    assert [(d["job_id"], d["attempts"]) for d in letters] == [(str(job.job_id), 3)]
    other = (await env.client.get(f"/v1/brands/{uuid.uuid4()}/knowledge/dead-letters")).status_code
    assert other == 404


async def test_transient_failure_then_success(env: Env, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(SHIPPING)
    calls: list[int] = []

    def flaky(request: IngestRequest, progress: ProgressFn) -> IngestSummary:
        calls.append(1)
        if len(calls) == 1:
            raise DependencyError("database restarting (simulated)")
        return env.real_run(request, progress)

    job = await _queued_job(env, sources=[str(tmp_path / "a.md")])
    await env.worker(flaky).run_once()
    row = await env.job(job.job_id)
    assert (row["status"], row["attempts"], len(calls)) == ("succeeded", 2, 2)
    assert row["counts"]["chunks_written"] >= 2


class WorkerCrash(BaseException):
    """Test double for a worker process dying mid-job (not an Exception: nothing in the worker catches it)."""


async def test_crashed_workers_job_is_reclaimed_and_a_poison_job_is_dead_lettered(
    env: Env, tmp_path: Path
) -> None:
    (tmp_path / "a.md").write_text(SHIPPING)
    job = await _queued_job(env, sources=[str(tmp_path / "a.md")])

    def crashing(request: IngestRequest, progress: ProgressFn) -> IngestSummary:
        raise WorkerCrash

    with pytest.raises(WorkerCrash):
        await env.worker(crashing, consumer="doomed").run_once()
    assert (await env.job(job.job_id))["status"] == "running"
    # A healthy worker does not steal a job that is still within its claim window...
    patient = env.worker(consumer="w2")
    assert await patient.run_once() == 0
    # ...but takes it over once it has been idle long enough (XAUTOCLAIM).
    env.settings.ingestion.claim_idle_ms = 1
    await asyncio.sleep(0.01)
    assert await env.worker(consumer="w2").run_once() == 1
    row = await env.job(job.job_id)
    assert (row["status"], row["attempts"]) == ("succeeded", 2)

    # A job that kills every worker: after max_attempts deliveries it is dead-lettered, not run again.
    poison = await _queued_job(env, sources=[str(tmp_path / "a.md")])
    for n in range(3):
        with pytest.raises(WorkerCrash):
            await env.worker(crashing, consumer=f"victim{n}").run_once()
        await asyncio.sleep(0.01)
    runs_before = len(env.runs)
    assert await env.worker(consumer="survivor").run_once() == 1
    row = await env.job(poison.job_id)
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert len(env.runs) == runs_before
    letters = await env.backend.redis.xrange(stream_key(env.settings.redis, DEAD_STREAM))
    assert [json.loads(f["data"])["job_id"] for _, f in letters] == [str(poison.job_id)]


async def test_a_job_processed_twice_gives_the_same_index(env: Env, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(SHIPPING)
    source = str((tmp_path / "a.md").resolve())
    job = await _queued_job(env, sources=[source])
    await env.worker().run_once()
    first = stored_ids(env.settings, env.tenant_id, env.brand_id, source)
    assert first and (await env.job(job.job_id))["status"] == "succeeded"

    # Redelivered (e.g. the ack was lost): acknowledged without running the pipeline again.
    await enqueue_job(env.backend.redis, env.settings, job)
    runs = len(env.runs)
    assert await env.worker().run_once() == 1
    assert len(env.runs) == runs

    # Run for real a second time (a new job over the same sources): same ids, nothing rewritten.
    again = await _queued_job(env, sources=[source])
    await env.worker().run_once()
    row = await env.job(again.job_id)
    assert row["counts"]["chunks_written"] == 0 and row["counts"]["chunks_deleted"] == 0
    assert stored_ids(env.settings, env.tenant_id, env.brand_id, source) == first


async def test_undecodable_entry_goes_to_dead_letters(env: Env) -> None:
    await env.backend.redis.xadd(stream_key(env.settings.redis, JOBS_STREAM), {"data": "{not json"})
    assert await env.worker().run_once() == 1
    letters = await env.backend.redis.xrange(stream_key(env.settings.redis, DEAD_STREAM))
    assert len(letters) == 1 and "undecodable" in json.loads(letters[0][1]["data"])["error"]


async def _stream_job_items(env: Env) -> list[dict[str, Any]]:
    entries = await env.backend.redis.xrange(stream_key(env.settings.redis, JOBS_STREAM))
    return list(json.loads(entries[-1][1]["data"])["items"])


async def _blobs_alive(env: Env, oids: list[int]) -> int:
    async with env.backend.sessionmaker() as session:
        found = await session.scalar(
            text("SELECT count(*) FROM pg_largeobject_metadata WHERE oid = ANY(:oids)"), {"oids": oids}
        )
    return int(found or 0)


async def _drain(pubsub: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    idle = 0
    while idle < 3:  # the subscribe confirmation also reads as None here
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is None:
            idle += 1
            continue
        events.append(json.loads(message["data"]))
    return events
