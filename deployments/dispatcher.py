"""Dispatcher deployment: a thin shell running :class:`common.delivery.worker.DeliveryWorker`.

No request traffic: the replica's loops consume the ``outbound`` stream and relay the outbox. Serve's
health check fails the replica when a loop died, so Serve restarts it; entries the dead replica held are
taken over by any replica with XAUTOCLAIM. Scale with ``num_replicas`` (one consumer per replica).
"""

from __future__ import annotations

import asyncio

from ray import serve

from common.config import ServiceEndpoints
from common.db.session import make_engine, make_sessionmaker
from common.delivery.worker import DeliveryWorker
from common.streams import connect
from deployments.replica import start_replica


@serve.deployment(name="dispatcher", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=8)
class DispatcherDeployment:
    """Outbound delivery: outbox relay + stream dispatcher, started with the replica."""

    def __init__(self, endpoints: ServiceEndpoints) -> None:
        settings = start_replica(endpoints, background=True)
        engine = make_engine(settings.database.url or "", pool_size=settings.database.pool_size)
        self._worker = DeliveryWorker(
            settings=settings, sessionmaker=make_sessionmaker(engine), redis=connect(settings.redis)
        )
        self._started = False
        try:  # Serve builds replicas inside their event loop; if not, the first health check starts them.
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._start()

    def _start(self) -> None:
        self._worker.start()
        self._started = True

    async def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy (it is restarted)."""
        if not self._started:
            self._start()
        if not self._worker.healthy():
            raise RuntimeError("delivery loops stopped")

    async def __del__(self) -> None:
        """Serve awaits this on graceful shutdown: finish the current pass, close clients."""
        await self._worker.stop()
