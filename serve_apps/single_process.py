"""The whole system in one process, without Ray: gateway HTTP API, inbound worker and dispatcher.

    python -m serve_apps.single_process --port 8001 [--endpoints '{"database_url": ..., "redis_url": ...}']

The same classes as the Serve deployments (``serve_apps/inprocess.py`` wires them with direct calls),
on one event loop: webhooks and web chat arrive over HTTP (uvicorn), accepted webhook messages are
drafted by an :class:`~common.conversation.inbound_worker.InboundWorker` consuming the ``inbound``
stream, and the
outbox relay + dispatcher send the replies. It is the load benchmark's baseline (``bench/load.py``:
the same Locust customers against it and against Ray Serve, so the ratio isolates what Serve costs)
and a way to step through webhook → reply with a plain debugger. It is not a production mode: one
process, one core, no replicas, no health-based restarts.

Settings come from the environment as everywhere else; ``--endpoints`` (JSON of
:class:`~common.config.ServiceEndpoints`, what the launcher hands to every replica) points it at the
same Postgres, Redis and Qdrant as a launcher-started stack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
import uuid
from collections.abc import Iterator

import uvicorn
from pydantic import ValidationError

from common.config import ServiceEndpoints, Settings
from common.conversation.inbound_worker import InboundWorker, WorkerConfig
from common.delivery.worker import DeliveryWorker
from common.logging import configure_logging, get_logger
from serve_apps.gateway.app import build_gateway_api
from serve_apps.inprocess import InProcessBackend

log = get_logger(__name__)


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM once it has stopped (so that ``uvicorn.run`` exits); here the
    inbound worker, the dispatcher and the pools still close after the server stops, so a signal only
    stops serving and the process then exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


async def serve(settings: Settings, endpoints: ServiceEndpoints, *, host: str, port: int) -> None:
    """Serve HTTP on ``host:port`` and run the stream workers until the server stops (SIGINT/SIGTERM)."""
    # The gateway's intake publishes after the 200, as the Serve gateway does (the committed outbox row
    # is the durability; the relay re-publishes what a crash left behind).
    backend = InProcessBackend(settings, endpoints, publish_after_ack=True)
    consumer = f"single-{uuid.uuid4().hex[:12]}"
    stop = asyncio.Event()
    inbound = InboundWorker(
        redis=backend.redis,
        redis_settings=backend.settings.redis,
        process=backend.orchestrator.process_stored,
        config=WorkerConfig(consumer=consumer),
    )
    delivery = DeliveryWorker(
        settings=backend.settings, sessionmaker=backend.sessionmaker, redis=backend.redis, consumer=consumer
    )
    inbound_task = asyncio.create_task(inbound.run_forever(stop))
    delivery.start()
    server = _Server(
        uvicorn.Config(
            build_gateway_api(backend),
            host=host,
            port=port,
            log_level="warning",  # the gateway logs one canonical line per request itself
            timeout_graceful_shutdown=5,
            # uvicorn closes idle keep-alive connections after 5 s; a client that reuses one just then
            # gets a connection reset (seen under the load profile's 5-15 s think time). Clients and
            # load balancers keep connections ~60 s, so the server keeps them longer (nginx: 75 s).
            timeout_keep_alive=75,
        )
    )
    log.info("single_process_serving", url=f"http://{host}:{port}")
    try:
        await server.serve()
    finally:
        stop.set()
        await delivery.stop()
        await inbound_task
        await backend.aclose()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit 2 on bad arguments."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--endpoints", help="ServiceEndpoints as JSON (default: DATABASE_URL, REDIS_URL, ...)"
    )
    opts = parser.parse_args(argv)
    settings = Settings()
    configure_logging(level=settings.log_level, json=settings.log_json)
    try:
        if opts.endpoints:
            endpoints = ServiceEndpoints.model_validate_json(opts.endpoints)
        else:
            endpoints = ServiceEndpoints(
                database_url=settings.database.url or "",
                redis_url=settings.redis.url or "",
                qdrant_url=settings.qdrant.url,
                qdrant_path=settings.qdrant.path,
            )
    except ValidationError as exc:
        parser.error(f"--endpoints: {exc.errors()[0]['msg']}")
    if not endpoints.database_url or not endpoints.redis_url:
        parser.error("set DATABASE_URL and REDIS_URL (or pass --endpoints): nothing is embedded here")
    asyncio.run(serve(settings, endpoints, host=opts.host, port=opts.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
