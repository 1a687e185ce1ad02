"""Shared fixtures: real Postgres and Redis, system servers when they answer, embedded ones otherwise.

* ``database_url``: a fresh database ``ema_test_<hex>`` migrated to head, dropped at session end.
* ``make_database``: more fresh, *empty* databases (migration tests), dropped at session end.
* ``db_session``: an ``AsyncSession`` inside one outer transaction that is rolled back after the test
  (SQLAlchemy 2.0 "joining a session into an external transaction"); ``commit()`` in code under test only
  releases a savepoint.
* ``db_engine``: a function-scoped async engine for tests that need real commits (concurrency).
* ``redis_url`` / ``redis_prefix``: a Redis (or embedded Valkey) and a per-run key prefix whose keys are
  deleted at session end.

``EMA_TEST_EMBEDDED=1`` skips the system servers and uses the embedded ones (to test that path in CI).
"""

from __future__ import annotations

import os
import random
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from common.config import S3Settings
from common.db import migrate
from common.db.session import make_engine
from common.embedded import EmbeddedPostgres, EmbeddedValkey, postgres_reachable, redis_reachable

SYSTEM_PG_HOST = "127.0.0.1"
SYSTEM_PG_PORT = 5432
SYSTEM_PG_USERS = ("root", "postgres")
SYSTEM_REDIS_URL = "redis://127.0.0.1:6379/0"


def _force_embedded() -> bool:
    return os.environ.get("EMA_TEST_EMBEDDED", "") == "1"


@dataclass
class PgCluster:
    """A Postgres server the tests may create and drop databases on."""

    url_template: str  # "...://user@host/{database}?..." — psycopg 3 SQLAlchemy URL
    created: list[str] = field(default_factory=list)

    def url_for(self, database: str) -> str:
        return self.url_template.format(database=database)

    def _admin(self, statement: str) -> None:
        import psycopg

        admin_uri = self.url_for("postgres").replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(admin_uri, autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]  # names below are generated, not user input

    def create_database(self) -> str:
        name = f"ema_test_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url_for(name)

    def drop_all(self) -> None:
        while self.created:
            self._admin(f'DROP DATABASE IF EXISTS "{self.created.pop()}" WITH (FORCE)')


def _system_pg_template() -> str | None:
    """URL template for the system Postgres with the first user that can log in, else None."""
    import psycopg

    if _force_embedded() or not postgres_reachable(SYSTEM_PG_HOST, SYSTEM_PG_PORT):
        return None
    for user in SYSTEM_PG_USERS:
        try:
            with psycopg.connect(
                host=SYSTEM_PG_HOST, port=SYSTEM_PG_PORT, user=user, dbname="postgres", connect_timeout=3
            ):
                pass
        except psycopg.OperationalError:
            continue
        return f"postgresql+psycopg://{user}@{SYSTEM_PG_HOST}:{SYSTEM_PG_PORT}/{{database}}"
    return None


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    """The system Postgres if reachable, else an embedded one in a temporary directory."""
    template = _system_pg_template()
    embedded: EmbeddedPostgres | None = None
    if template is None:
        embedded = EmbeddedPostgres(tmp_path_factory.mktemp("embedded") / "pg", database="postgres").start()
        template = embedded.url.replace("/postgres?", "/{database}?", 1)
    cluster = PgCluster(url_template=template)
    try:
        yield cluster
    finally:
        cluster.drop_all()
        if embedded is not None:
            embedded.stop()


@pytest.fixture(scope="session")
def make_database(pg_cluster: PgCluster) -> Callable[[], str]:
    """Factory of fresh, empty databases (dropped with the cluster fixture)."""
    return pg_cluster.create_database


@pytest.fixture(scope="session")
def database_url(pg_cluster: PgCluster) -> str:
    """A fresh database migrated to head, shared by the whole session."""
    url = pg_cluster.create_database()
    migrate.upgrade(url)
    return url


@pytest_asyncio.fixture
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Async engine bound to the test loop (function scope avoids cross-loop connections)."""
    engine = make_engine(database_url, pool_size=5)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest_asyncio.fixture
async def db_session(db_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session whose work is rolled back after the test, commits included."""
    async with db_engine.connect() as connection:
        outer = await connection.begin()
        session = AsyncSession(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield session
        finally:
            await session.close()
            if outer.is_active:
                await outer.rollback()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def listen_port() -> int:
    """A free port for a server started later (the Serve proxy), outside the kernel's ephemeral range
    (32768-60999 on Linux) and Ray's worker ports (10002-19999). A port from ``bind(0)`` is an ephemeral
    one, and any outgoing connection (``ray.init`` opens many) may take it before the proxy binds it:
    seen once as "Failed to bind to address" in CI."""
    rng = random.Random()
    for _ in range(500):
        port = rng.randint(20_000, 32_000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The system Redis if it answers PING, else an embedded Valkey."""
    if not _force_embedded() and redis_reachable(SYSTEM_REDIS_URL):
        yield SYSTEM_REDIS_URL
        return
    valkey = EmbeddedValkey(tmp_path_factory.mktemp("embedded") / "valkey", port=_free_port()).start()
    try:
        yield valkey.url
    finally:
        valkey.stop()


@pytest.fixture(scope="session")
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this run; every key under it is deleted at session end."""
    import redis

    prefix = f"ematest{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# --- process exit -----------------------------------------------------------------------------------
# After a full run (Ray, llama.cpp, torch and uvicorn threads all loaded in this process) the interpreter
# was seen to segfault during its own teardown *after* pytest had reported every test passed (exit 139 on
# 2026-11-26; not reproducible with any subset). The report and coverage data are complete by then, so
# the process leaves with pytest's own status instead of running native finalizers. Set
# EMA_TEST_NORMAL_EXIT=1 to get the ordinary interpreter shutdown (e.g. to debug that crash).


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(session.exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    status = config.stash.get(_EXIT_STATUS, None)
    if status is None or os.environ.get("EMA_TEST_NORMAL_EXIT"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


_EXIT_STATUS = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Settings]:
    """An S3-compatible server for the session: moto's standalone ``ThreadedMotoServer`` over HTTP (a real
    server speaking the S3 wire protocol, not a mocked client). Tests create their own buckets."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Settings(
            endpoint_url=f"http://127.0.0.1:{port}",
            access_key_id="test",
            secret_access_key="test",  # type: ignore[arg-type]  # pydantic coerces str → SecretStr
            region="us-east-1",
        )
    finally:
        server.stop()
