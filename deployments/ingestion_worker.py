"""Ingestion worker deployment: runs :class:`pipelines.worker.IngestionWorker` in a background task.

Serves no requests: the loop starts in ``__init__`` (on the replica's event loop) and stops in
``__del__``; ``check_health`` fails when the loop died, so Serve replaces the replica. Each replica is
one consumer of the ``ingest-jobs`` group with a unique name; a dead replica's pending job is taken over
by another one through XAUTOCLAIM. The pipeline runs
on the Ray Data engine in the replica's cluster; with the embedded engine the vectors are written through
the ``knowledge`` deployment (``pipelines.stages.ServePointWriter``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from ray import serve

from common.config import ServiceEndpoints, Settings
from common.db.session import make_engine, make_sessionmaker
from common.logging import get_logger
from common.streams import connect
from deployments.replica import start_replica
from pipelines.ingest import Engine, IngestRequest, IngestSummary, ProgressFn, run_ingest
from pipelines.worker import IngestionWorker

log = get_logger(__name__)


def pipeline_runner(
    settings: Settings, engine: Engine
) -> Callable[[IngestRequest, ProgressFn], IngestSummary]:
    """The worker's ``run`` function: :func:`pipelines.ingest.run_ingest` with fixed settings and engine."""

    def run(request: IngestRequest, progress: ProgressFn) -> IngestSummary:
        return run_ingest(request, settings=settings, engine=engine, progress=progress)

    return run


@serve.deployment(name="ingestion_worker", ray_actor_options={"num_cpus": 0.1}, num_replicas=1)
class IngestionWorkerDeployment:
    """No requests to serve: the replica's life is the worker loop."""

    def __init__(self, endpoints: ServiceEndpoints, engine: str = Engine.RAY.value) -> None:
        settings = start_replica(endpoints, background=True)
        self._engine = make_engine(settings.database.url or "", pool_size=2)
        self._redis = connect(settings.redis)
        self._worker = IngestionWorker(
            settings=settings,
            redis=self._redis,
            sessionmaker=make_sessionmaker(self._engine),
            run=pipeline_runner(settings, Engine(engine)),
            consumer=f"worker-{uuid.uuid4().hex[:12]}",
        )
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._worker.run_forever(self._stop))

    async def check_health(self) -> None:
        """Serve's health probe: the loop must still be running."""
        if self._task.done():
            raise RuntimeError("ingestion worker loop stopped")

    def __del__(self) -> None:
        self._stop.set()
        if not self._task.done():
            self._task.cancel()
