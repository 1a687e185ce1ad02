"""Local stack launcher: ``python -m serve_apps.launcher`` (what ``make run`` calls).

Uses ``DATABASE_URL`` / ``REDIS_URL`` / ``QDRANT_URL`` / ``RAY_ADDRESS`` when set; otherwise starts
embedded Postgres and Valkey with data under ``DATA_DIR`` (default ``./.data``, kept across restarts)
and runs Qdrant embedded (Qdrant Edge) on disk. Then: migrations → (once) vectors of an old local-mode
directory rebuilt from Postgres → Ray + Serve → demo brand seeded → demo
knowledge ingested through the public API → URLs printed → wait for Ctrl-C → clean shutdown.

Ctrl-C (or SIGTERM) at any moment of start-up stops what has started: Serve drains, Ray shuts down, then
the embedded servers stop (they run in a process group of their own, so the terminal's signal does not
kill them first). A second Ctrl-C while stopping exits at once; see :class:`Interrupts`.
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
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from types import FrameType, ModuleType
from typing import Any, Self

import httpx
from dotenv import dotenv_values
from sqlalchemy.ext.asyncio import AsyncEngine

from common.config import ServiceEndpoints, Settings, get_settings
from common.crypto import generate_key
from common.db.migrate import upgrade
from common.db.session import make_engine, make_sessionmaker
from common.embedded import DetachedServers
from common.errors import AssistantError, Unauthorized
from common.logging import configure_logging, get_logger
from pipelines.demo import DemoBrand, demo_documents, seed_demo_brand, seed_simulated_channels
from serve_apps.admin import migrate_local_vectors, write_private

log = get_logger(__name__)


@dataclass
class Stack:
    """What the launcher started, so it can stop exactly that."""

    endpoints: ServiceEndpoints
    servers: DetachedServers | None = None

    def stop(self) -> None:
        """Stop the embedded servers (Valkey, then Postgres); last, once nothing uses them."""
        if self.servers is not None:
            self.servers.stop()
            self.servers = None


@contextlib.contextmanager
def backing_services(settings: Settings) -> Iterator[Stack]:
    """Resolve every endpoint, starting embedded servers for the ones not configured.

    The embedded servers run in a child process of their own session (:class:`DetachedServers`): the
    terminal's Ctrl-C does not kill them under a Serve app that still needs them to drain.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(endpoints=ServiceEndpoints(database_url="", redis_url=""))
    try:
        db_url = settings.database.url
        redis_url = settings.redis.url
        if not db_url or not redis_url:
            stack.servers = DetachedServers(
                settings.data_dir,
                postgres=not db_url,
                valkey_port=None if redis_url else settings.redis.embedded_port,
            )
            stack.servers.start()
            db_url = db_url or stack.servers.database_url or ""
            redis_url = redis_url or stack.servers.redis_url or ""
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
    sim = f"http://127.0.0.1:{SIMULATOR_PORT}"
    # Voice notes sent through the simulator are transcribed by its SIMULATED endpoint, and the demo's
    # tickets open in its SIMULATED helpdesk (not stored in the file: a data directory written before
    # these existed gets them too, and a configured one wins).
    media = {} if settings.media.transcription_url else {"MEDIA__TRANSCRIPTION_URL": f"{sim}/v1"}
    if not settings.actions.helpdesk_base_url:
        media["ACTIONS__HELPDESK_BASE_URL"] = f"{sim}/_sim/helpdesk"
    if path.is_file():
        return {**{k: v for k, v in dotenv_values(path).items() if v is not None}, **media}
    env = {
        "CHANNELS__META_APP_SECRET": secrets.token_hex(16),
        "CHANNELS__META_VERIFY_TOKEN": secrets.token_hex(8),
        "CHANNELS__META_ACCESS_TOKEN": secrets.token_hex(16),
        "CHANNELS__TELEGRAM_BOT_TOKEN": f"{secrets.randbelow(9 * 10**9) + 10**9}:{secrets.token_urlsafe(24)}",
        "CHANNELS__TELEGRAM_SECRET_TOKEN": secrets.token_hex(16),
        "CHANNELS__META_GRAPH_URL": sim,
        "CHANNELS__TELEGRAM_API_URL": sim,
    }
    write_private(path, "".join(f"{k}={v}\n" for k, v in env.items()))
    return {**env, **media}


OPERATOR_KEY_FILE = "operator.key"
SECRETS_KEY_FILE = "secrets.key"
DEMO_KEY_FILE = "demo.key"
DEMO_AGENT_PASSWORD_FILE = "demo-agent.password"  # noqa: S105 - a file name
DEMO_AGENT_EMAIL = "agent@demo.local"
LOCAL_ENV_FILE = "local.env"


def local_operator_env(settings: Settings) -> tuple[dict[str, str], bool]:
    """``API__OPERATOR_KEY`` for a local run that has none: kept in ``DATA_DIR/operator.key`` (mode 600).

    Returns the variables to hand to Serve's replicas and whether the key was generated just now (the
    launcher prints it once). A deployment that sets ``API__OPERATOR_KEY`` gets nothing from here.
    """
    if settings.api.operator_key is not None:
        return {}, False
    path = settings.data_dir / OPERATOR_KEY_FILE
    created = not path.is_file()
    if created:
        write_private(path, secrets.token_urlsafe(32) + "\n")
    return {"API__OPERATOR_KEY": path.read_text(encoding="utf-8").strip()}, created


def local_secrets_env(settings: Settings) -> dict[str, str]:
    """``SECRETS__ENCRYPTION_KEYS`` (kept in ``DATA_DIR/secrets.key``, mode 600) and ``CHANNELS__PUBLIC_URL``
    (this gateway's local URL) for a local run that sets neither; a deployment that sets them gets nothing.

    Losing ``secrets.key`` loses the channel connections' credentials (they are reconnected), never data.
    """
    env: dict[str, str] = {}
    if settings.secrets.encryption_keys is None:
        path = settings.data_dir / SECRETS_KEY_FILE
        if not path.is_file():
            write_private(path, generate_key() + "\n")
        env["SECRETS__ENCRYPTION_KEYS"] = path.read_text(encoding="utf-8").strip()
    if settings.channels.public_url is None:
        env["CHANNELS__PUBLIC_URL"] = f"http://{settings.ray.http_host}:{settings.ray.http_port}"
    return env


#: What the admin CLI needs of a local run besides the database: to encrypt what it connects, to register
#: Telegram webhooks (at the simulator) and to print webhook URLs.
CLI_VARIABLES = (
    "SECRETS__ENCRYPTION_KEYS",
    "CHANNELS__PUBLIC_URL",
    "CHANNELS__TELEGRAM_API_URL",
    "CHANNELS__META_GRAPH_URL",
)


def write_local_env(settings: Settings, endpoints: ServiceEndpoints, generated: dict[str, str]) -> None:
    """``DATA_DIR/local.env`` (mode 600): where this run's Postgres and Valkey listen, and the locally
    generated values the admin CLI needs (``serve_apps.admin`` reads it for whatever is unset)."""
    lines = [f"DATABASE_URL={endpoints.database_url}", f"REDIS_URL={endpoints.redis_url}"]
    lines += [f"{k}={generated[k]}" for k in CLI_VARIABLES if k in generated]
    write_private(settings.data_dir / LOCAL_ENV_FILE, "\n".join(lines) + "\n")


async def demo_agent(sessionmaker: Any, settings: Settings, demo: DemoBrand) -> None:
    """The demo tenant's agent account for the console; its password is generated into
    ``DATA_DIR/demo-agent.password`` (mode 600), set again when that file is missing."""
    from pydantic import SecretStr

    from common.access.agents import AgentAccountIn, AgentAccountPatch, AgentAccounts
    from common.access.principal import operator_principal
    from common.db import repositories as repo

    path = settings.data_dir / DEMO_AGENT_PASSWORD_FILE
    fresh = not path.is_file()
    if fresh:
        write_private(path, secrets.token_urlsafe(18) + "\n")
    password = SecretStr(path.read_text(encoding="utf-8").strip())
    service, actor = AgentAccounts(sessionmaker), operator_principal("operator:make-run")
    async with sessionmaker() as session:
        row = await repo.find_agent_account(session, tenant_id=demo.tenant.id, email=DEMO_AGENT_EMAIL)
    if row is None:
        body = AgentAccountIn(email=DEMO_AGENT_EMAIL, display_name="Demo agent", password=password)
        await service.create(actor, demo.tenant.id, body)
    elif fresh:
        await service.update(actor, demo.tenant.id, row.id, AgentAccountPatch(password=password))


async def demo_api_key(engine: AsyncEngine, settings: Settings, demo: DemoBrand) -> str:
    """The demo tenant's admin key, kept in ``DATA_DIR/demo.key`` (mode 600): reused while it is live in
    this database, otherwise a new one is created through the management service."""
    from common.access.management import KeyIn, Management
    from common.access.principal import Scope, operator_principal
    from serve_apps.gateway.auth import Authenticator

    path = settings.data_dir / DEMO_KEY_FILE
    sessionmaker = make_sessionmaker(engine)
    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        # The gateway's own check: unknown, revoked and expired keys are refused the same way here.
        with contextlib.suppress(Unauthorized):
            caller = await Authenticator(settings, lambda: sessionmaker).principal(f"Bearer {token}")
            if caller.tenant_id == demo.tenant.id:
                return token
    created = await Management(sessionmaker).create_key(
        operator_principal("operator:make-run"),
        demo.tenant.id,
        KeyIn(name="make run demo key", scopes=[Scope.ADMIN]),
    )
    write_private(path, created.token + "\n")
    return created.token


def start_serve(settings: Settings, endpoints: ServiceEndpoints, *, env: dict[str, str] | None = None) -> str:
    """Start (or join) Ray, run the Serve app; returns the HTTP base URL."""
    import ray
    from ray import serve

    from serve_apps.app_builder import AppArgs, build_app

    use_serve_latency_env(settings)
    global _ray_started
    _ray_started = True  # from here on (imports done) stop_serve has something to stop
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
    log.info("launcher.phase", phase="serve")
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


SERVE_DRAIN_TIMEOUT_S = 30.0
_ray_started = False


def stop_serve(drain_timeout_s: float = SERVE_DRAIN_TIMEOUT_S) -> None:
    """Shut Serve and Ray down; safe to call when they never (or only half) started.

    ``serve.shutdown`` waits for replicas to drain, and a replica stuck in its constructor (e.g. a
    backing server gone) would make it wait forever: after ``drain_timeout_s`` Ray is shut down anyway,
    which stops every process it started.
    """
    if not _ray_started:  # e.g. Ctrl-C during `import ray`: importing it again here would fail
        return
    import ray
    from ray import serve

    if ray.is_initialized():
        drain = threading.Thread(target=_serve_shutdown, args=(serve,), name="serve-shutdown", daemon=True)
        drain.start()
        drain.join(drain_timeout_s)
        if drain.is_alive():
            log.warning("launcher.serve_drain_timeout", timeout_s=drain_timeout_s)
    # Also when ray.init was interrupted half-way: it may have started the head node's processes.
    ray.shutdown()


def _serve_shutdown(serve: ModuleType) -> None:
    with contextlib.suppress(Exception):  # best effort: Ray may already be half down
        serve.shutdown()


def ingest_demo(base_url: str, demo: DemoBrand, api_key: str) -> int:
    """Upload the demo knowledge through the public API; returns the number of chunks indexed."""
    upload = demo_documents()
    resp = httpx.post(
        f"{base_url}/v1/brands/{demo.brand.id}/knowledge",
        json=upload.model_dump(mode="json"),
        headers={"authorization": f"Bearer {api_key}"},
        timeout=300,
    )
    resp.raise_for_status()
    return len(resp.json()["chunk_ids"])


def banner(base_url: str, demo: DemoBrand, chunks: int, *, key_file: str, agent_file: str) -> str:
    """What a newcomer needs to start chatting."""
    curl = (
        f"curl -s -X POST {base_url}/v1/messages/inbound -H 'content-type: application/json' "
        f'-H "authorization: Bearer $(cat {key_file})" '
        f'-d \'{{"brand_id": "{demo.brand.id}", "customer_id": "me", '
        f'"text": "How long do I have to return an item?"}}\''
    )
    return "\n".join(
        [
            "",
            f"  {demo.brand.name} is ready ({chunks} knowledge chunks indexed).",
            f"  Web chat:  {base_url}/chat/{demo.brand.id}",
            f"  API base:  {base_url}/v1   (health: {base_url}/healthz, ready: {base_url}/readyz)",
            f"  API key:   {key_file} (the demo tenant's admin key; docs/SECURITY.md)",
            f"  Agents:    {base_url}/agent (workspace {demo.tenant.slug}, {DEMO_AGENT_EMAIL}, "
            f"password in {agent_file})",
            f"  Try:       {curl}",
            "  Simulated WhatsApp/Instagram/Telegram: `make simulate` (in another terminal) sends one "
            "question on each and prints the replies.",
            "  Ctrl-C stops everything.",
            "",
        ]
    )


class Interrupts:
    """SIGINT/SIGTERM handling, installed before the launcher starts anything.

    The first signal raises :class:`KeyboardInterrupt` in the main thread, wherever start-up is
    (migrations, ``serve.run``, the demo ingestion) or in the final wait, so the ``finally`` blocks stop
    Serve, then Ray, then the embedded servers. A signal while stopping (a second Ctrl-C) exits at once:
    Ray's processes share the launcher's fate (the kernel kills them when it dies) and the embedded
    servers' child stops them when its stdin closes.
    """

    def __init__(self) -> None:
        self.stopping = False
        self._previous: dict[int, Any] = {}

    def install(self) -> Self:
        """Take over SIGINT and SIGTERM (main thread only)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        """Put back the handlers :meth:`install` replaced (``main`` called in-process, as tests do)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def begin_stop(self) -> None:
        """From now on a signal means "exit now"."""
        self.stopping = True

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
            sys.stderr.write("\nlauncher: stopping (press Ctrl-C again to exit at once)\n")
            raise KeyboardInterrupt
        sys.stderr.write("launcher: exiting now\n")
        sys.stderr.flush()
        os._exit(128 + signum)


def _wait_for_stop() -> None:
    while True:  # until Interrupts raises KeyboardInterrupt
        time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    """Run the local stack until interrupted; a start-up failure is one line on stderr and exit code 1."""
    interrupts = Interrupts().install()
    try:
        return _run(argv, interrupts)
    except KeyboardInterrupt:
        sys.stderr.write("launcher: stopped\n")
        return 130
    except AssistantError as exc:
        # e.g. a second `make run` on the same DATA_DIR: the embedded servers' ports are taken.
        detail = exc.details.get("error") if isinstance(exc.details.get("error"), str) else ""
        sys.stderr.write(f"launcher: {exc.message}{f' ({detail})' if detail else ''} [{exc.code}]\n")
        return 1
    finally:
        interrupts.restore()


def _run(argv: list[str] | None, interrupts: Interrupts) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_apps.launcher", description=__doc__)
    parser.add_argument("--no-demo", action="store_true", help="do not seed or ingest the demo brand")
    parser.add_argument("--exit-after-start", action="store_true", help="start, print URLs, then stop")
    opts = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = get_settings()
    problems = settings.production_problems()
    if problems:  # before anything is configured or started (logging included)
        sys.stderr.write("".join(f"launcher: refusing to start: {p}\n" for p in problems))
        return 1
    configure_logging(level=settings.log_level, json=settings.log_json)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sim_env = {} if opts.no_demo else simulated_channel_env(settings)
    operator_env, operator_created = local_operator_env(settings)
    serve_env = {**sim_env, **operator_env, **local_secrets_env(settings)}
    if serve_env:
        os.environ.update(serve_env)
        get_settings.cache_clear()
        settings = get_settings()
    if operator_created:
        key_path = settings.data_dir / OPERATOR_KEY_FILE
        print(
            f"\n  Operator key (shown once; also in {key_path}): {operator_env['API__OPERATOR_KEY']}\n",
            flush=True,
        )
    with backing_services(settings) as stack:
        try:
            log.info("launcher.phase", phase="migrations")
            upgrade(stack.endpoints.database_url)
            write_local_env(settings, stack.endpoints, serve_env)
            engine = make_engine(stack.endpoints.database_url, pool_size=2)
            bot_token = settings.channels.telegram_bot_token
            bot_id = bot_token.get_secret_value().split(":", 1)[0] if sim_env and bot_token else None
            seeded = asyncio.run(_seed(engine, settings, opts.no_demo, bot_id))
            demo, api_key = seeded if seeded is not None else (None, "")
            # Before Serve starts: the knowledge replica will own the directory from then on.
            asyncio.run(migrate_local_vectors(settings, database_url=stack.endpoints.database_url))
            log.info("launcher.phase", phase="ray")
            base_url = start_serve(settings, stack.endpoints, env=serve_env)
            log.info("launcher.phase", phase="ingest")
            chunks = ingest_demo(base_url, demo, api_key) if demo is not None else 0
            if demo is not None:
                key_file = os.path.relpath(settings.data_dir / DEMO_KEY_FILE)
                agent_file = os.path.relpath(settings.data_dir / DEMO_AGENT_PASSWORD_FILE)
                print(banner(base_url, demo, chunks, key_file=key_file, agent_file=agent_file), flush=True)
            else:
                print(f"\n  API base: {base_url}/v1\n", flush=True)
            log.info("launcher.phase", phase="ready", base_url=base_url)
            if not opts.exit_after_start:
                _wait_for_stop()
        finally:
            interrupts.begin_stop()
            log.info("launcher.phase", phase="stopping")
            stop_serve()
    return 0


async def _seed(
    engine: AsyncEngine, settings: Settings, skip: bool, telegram_bot_id: str | None
) -> tuple[DemoBrand, str] | None:
    try:
        if skip:
            return None
        sessionmaker = make_sessionmaker(engine)
        demo = await seed_demo_brand(sessionmaker)
        if telegram_bot_id:
            await seed_simulated_channels(sessionmaker, demo, telegram_bot_id=telegram_bot_id)
        await demo_agent(sessionmaker, settings, demo)
        return demo, await demo_api_key(engine, settings, demo)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
