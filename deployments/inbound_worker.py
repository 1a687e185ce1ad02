"""Inbound worker deployment: runs :class:`common.conversation.inbound_worker.InboundWorker` in the
background.

It serves no requests; the loop starts in ``__init__`` (Serve runs constructors on the replica's event
loop) and stops in ``__del__``. ``check_health`` fails if the loop died, so Serve replaces the replica.
Each replica is one consumer of the group (its name is unique per replica), so replicas share the
stream and reclaim each other's entries when one crashes.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from common.config import ServiceEndpoints
from common.conversation.inbound_worker import InboundWorker, WorkerConfig
from common.domain import OutboundResponse
from common.logging import get_logger
from common.streams import connect
from deployments.proxy import HandleProxy
from deployments.replica import start_replica

log = get_logger(__name__)


@serve.deployment(name="inbound_worker", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=4)
class InboundWorkerDeployment:
    """Drafts replies to accepted webhook messages by calling the orchestrator's ``process_stored``."""

    def __init__(self, orchestrator: DeploymentHandle[Any], endpoints: ServiceEndpoints) -> None:
        settings = start_replica(endpoints, background=True)
        self._orchestrator = HandleProxy(orchestrator)
        self._redis = connect(settings.redis)
        self._worker = InboundWorker(
            redis=self._redis,
            redis_settings=settings.redis,
            process=self._process,
            config=WorkerConfig(consumer=f"worker-{uuid.uuid4().hex[:12]}"),
        )
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._worker.run_forever(self._stop))

    async def _process(self, inbound_id: uuid.UUID) -> OutboundResponse:
        response: OutboundResponse = await self._orchestrator.process_stored(inbound_id)
        return response

    async def check_health(self) -> None:
        """Serve's health probe: the loop must still be running."""
        if self._task.done():
            raise RuntimeError("inbound worker loop stopped")

    def __del__(self) -> None:
        self._stop.set()
        if not self._task.done():
            self._task.cancel()
