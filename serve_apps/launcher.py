"""Local stack launcher: ``python -m serve_apps.launcher`` (what ``make run`` calls).

Uses ``DATABASE_URL`` / ``REDIS_URL`` / ``QDRANT_URL`` / ``RAY_ADDRESS`` when set; otherwise starts
embedded Postgres and Valkey with data under ``DATA_DIR`` (default ``./.data``, kept across restarts)
and runs Qdrant in local mode on disk. Then: migrations → Ray + Serve → demo brand seeded → demo
knowledge ingested through the public API → URLs printed → wait for Ctrl-C → clean shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
import threading
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass

import httpx
from dotenv import dotenv_values
from sqlalchemy.ext.asyncio import AsyncEngine

from common.config import ServiceEndpoints, Settings, get_settings
from common.db.migrate import upgrade
from common.db.session import make_engine, make_sessionmaker
from common.embedded import EmbeddedPostgres, EmbeddedValkey
from common.errors import AssistantError
from common.logging import configure_logging, get_logger
from pipelines.demo import DemoBrand, demo_documents, seed_demo_brand, seed_simulated_channels

log = get_logger(__name__)


@dataclass
class Stack:
    """What the launcher started, so it can stop exactly that."""

    endpoints: ServiceEndpoints
    postgres: EmbeddedPostgres | None = None
    valkey: EmbeddedValkey | None = None

    def stop(self) -> None:
        """Stop embedded servers (in reverse start order)."""
        if self.valkey is not None:
            self.valkey.stop()
        if self.postgres is not None:
            self.postgres.stop()


@contextlib.contextmanager
def backing_services(settings: Settings) -> Iterator[Stack]:
    """Resolve every endpoint, starting embedded servers for the ones not configured."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(endpoints=ServiceEndpoints(database_url="", redis_url=""))
    try:
        db_url = settings.database.url
        if not db_url:
            stack.postgres = EmbeddedPostgres(settings.data_dir / "postgres")
            stack.postgres.start()
            db_url = stack.postgres.url
        redis_url = settings.redis.url
        if not redis_url:
            stack.valkey = EmbeddedValkey(settings.data_dir / "valkey", port=settings.redis.embedded_port)
            stack.valkey.start()
            redis_url = stack.valkey.url
        stack.endpoints = ServiceEndpoints(
            database_url=db_url,
            redis_url=redis_url,
            redis_key_prefix=settings.redis.key_prefix,
            qdrant_url=settings.qdrant.url,
            qdrant_path=None if settings.qdrant.url else settings.qdrant_path,
        )
        yield stack
    finally:
        stack.stop()


SIMULATOR_PORT = 8900


def simulated_channel_env(settings: Settings) -> dict[str, str]:
    """Local-only channel secrets and provider URLs pointing at the provider SIMULATOR.

    Only when no channel secret is configured (a fresh ``make run``): random secrets are generated once
    into ``DATA_DIR/simulator.env`` (mode 600, never in the repo) so that ``make simulate`` signs its
    webhooks with the same values the gateway verifies, and replies go to the simulator instead of the
    unreachable Meta / Telegram APIs. Real deployments set CHANNELS__* and get none of this.
    """
    ch = settings.channels
    if ch.meta_app_secret or ch.telegram_bot_token or ch.telegram_secret_token:
        return {}
    path = settings.data_dir / "simulator.env"
    if path.is_file():
        return {k: v for k, v in dotenv_values(path).items() if v is not None}
    sim = f"http://127.0.0.1:{SIMULATOR_PORT}"
    env = {
        "CHANNELS__META_APP_SECRET": secrets.token_hex(16),
        "CHANNELS__META_VERIFY_TOKEN": secrets.token_hex(8),
        "CHANNELS__META_ACCESS_TOKEN": secrets.token_hex(16),
        "CHANNELS__TELEGRAM_BOT_TOKEN": f"{secrets.randbelow(9 * 10**9) + 10**9}:{secrets.token_urlsafe(24)}",
        "CHANNELS__TELEGRAM_SECRET_TOKEN": secrets.token_hex(16),
        "CHANNELS__META_GRAPH_URL": sim,
        "CHANNELS__TELEGRAM_API_URL": sim,
    }
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()), encoding="utf-8")
    path.chmod(0o600)
    return env


def start_serve(settings: Settings, endpoints: ServiceEndpoints, *, env: dict[str, str] | None = None) -> str:
    """Start (or join) Ray, run the Serve app; returns the HTTP base URL."""
    import ray
    from ray import serve

    from serve_apps.app_builder import AppArgs, build_app

    use_serve_latency_env(settings)
    ray.init(
        address=settings.ray.address,
        namespace=settings.ray.namespace,
        num_cpus=None if settings.ray.address else settings.ray.num_cpus,
        include_dashboard=False,
        log_to_driver=settings.ray.log_to_driver,
        # Replicas read settings from their environment: hand them the launcher's extra variables.
        runtime_env={"env_vars": env} if env else None,
        # Only a Ray we start takes system config; a cluster's workers get RAY_worker_niceness on their pods.
        _system_config=None if settings.ray.address else {"worker_niceness": settings.ray.worker_nice},
    )
    serve.start(http_options={"host": settings.ray.http_host, "port": settings.ray.http_port})
    args = AppArgs(
        endpoints=endpoints,
        gateway_replicas=settings.ray.gateway_replicas,
        orchestrator_replicas=settings.ray.orchestrator_replicas,
        embedder_replicas=settings.ray.embedder_replicas,
        llm_replicas=settings.ray.llm_replicas,
    )
    serve.run(build_app(args), name=settings.ray.app_name, route_prefix="/")
    return f"http://{settings.ray.http_host}:{settings.ray.http_port}"


def use_serve_latency_env(settings: Settings, environ: MutableMapping[str, str] = os.environ) -> None:
    """Before starting a local Ray: :data:`deployments.replica.SERVE_LATENCY_ENV` unless already set.

    Ray's processes inherit the environment of the Ray that ``ray.init`` starts; a cluster's pods get
    the same variables from the Helm values instead (``settings.ray.address`` set: nothing to do here).
    """
    from deployments.replica import SERVE_LATENCY_ENV

    if settings.ray.address:
        return
    for key, value in SERVE_LATENCY_ENV.items():
        environ.setdefault(key, value)


def stop_serve() -> None:
    """Shut Serve and Ray down; safe to call when they never started."""
    import ray
    from ray import serve

    if ray.is_initialized():
        with contextlib.suppress(Exception):  # best effort: Ray may already be half down on Ctrl-C
            serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


def ingest_demo(base_url: str, demo: DemoBrand) -> int:
    """Upload the demo knowledge through the public API; returns the number of chunks indexed."""
    upload = demo_documents()
    resp = httpx.post(
        f"{base_url}/v1/brands/{demo.brand.id}/knowledge",
        json=upload.model_dump(mode="json"),
        timeout=300,
    )
    resp.raise_for_status()
    return len(resp.json()["chunk_ids"])


def banner(base_url: str, demo: DemoBrand, chunks: int) -> str:
    """What a newcomer needs to start chatting."""
    curl = (
        f"curl -s -X POST {base_url}/v1/messages/inbound -H 'content-type: application/json' "
        f'-d \'{{"brand_id": "{demo.brand.id}", "customer_id": "me", '
        f'"text": "How long do I have to return an item?"}}\''
    )
    return "\n".join(
        [
            "",
            f"  {demo.brand.name} is ready ({chunks} knowledge chunks indexed).",
            f"  Web chat:  {base_url}/chat/{demo.brand.id}",
            f"  API base:  {base_url}/v1   (health: {base_url}/healthz, ready: {base_url}/readyz)",
            f"  Try:       {curl}",
            "  Simulated WhatsApp/Instagram/Telegram: `make simulate` (in another terminal) sends one "
            "question on each and prints the replies.",
            "  Ctrl-C stops everything.",
            "",
        ]
    )


def _wait_for_stop() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Run the local stack until interrupted; a start-up failure is one line on stderr and exit code 1."""
    try:
        return _run(argv)
    except AssistantError as exc:
        # e.g. a second `make run` on the same DATA_DIR: the embedded servers' ports are taken.
        detail = exc.details.get("error") if isinstance(exc.details.get("error"), str) else ""
        sys.stderr.write(f"launcher: {exc.message}{f' ({detail})' if detail else ''} [{exc.code}]\n")
        return 1


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_apps.launcher", description=__doc__)
    parser.add_argument("--no-demo", action="store_true", help="do not seed or ingest the demo brand")
    parser.add_argument("--exit-after-start", action="store_true", help="start, print URLs, then stop")
    opts = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = get_settings()
    configure_logging(level=settings.log_level, json=settings.log_json)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sim_env = {} if opts.no_demo else simulated_channel_env(settings)
    if sim_env:
        os.environ.update(sim_env)
        get_settings.cache_clear()
        settings = get_settings()
    with backing_services(settings) as stack:
        try:
            upgrade(stack.endpoints.database_url)
            engine = make_engine(stack.endpoints.database_url, pool_size=2)
            bot_token = settings.channels.telegram_bot_token
            bot_id = bot_token.get_secret_value().split(":", 1)[0] if sim_env and bot_token else None
            demo = asyncio.run(_seed(engine, opts.no_demo, bot_id))
            base_url = start_serve(settings, stack.endpoints, env=sim_env)
            chunks = ingest_demo(base_url, demo) if demo is not None else 0
            if demo is not None:
                print(banner(base_url, demo, chunks), flush=True)
            else:
                print(f"\n  API base: {base_url}/v1\n", flush=True)
            if not opts.exit_after_start:
                _wait_for_stop()
        finally:
            stop_serve()
    return 0


async def _seed(engine: AsyncEngine, skip: bool, telegram_bot_id: str | None) -> DemoBrand | None:
    try:
        if skip:
            return None
        sessionmaker = make_sessionmaker(engine)
        demo = await seed_demo_brand(sessionmaker)
        if telegram_bot_id:
            await seed_simulated_channels(sessionmaker, demo, telegram_bot_id=telegram_bot_id)
        return demo
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
