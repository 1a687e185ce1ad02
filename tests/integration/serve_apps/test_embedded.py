"""Embedded Postgres and Valkey: they answer, keep data across restarts, and leave no process behind."""

from __future__ import annotations

import socket

import psutil
import pytest
import redis
from sqlalchemy import text

from common.db.session import make_sync_engine
from common.embedded import EmbeddedPostgres, EmbeddedValkey, postgres_reachable, redis_reachable

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _scalar(url: str, *statements: str) -> object:
    """Run ``statements`` in one transaction; the last one's scalar."""
    engine = make_sync_engine(url)
    try:
        with engine.begin() as conn:
            results = [conn.execute(text(sql)) for sql in statements]
            return results[-1].scalar()
    finally:
        engine.dispose()


def test_embedded_postgres_runs_persists_and_stops(tmp_path):
    server = EmbeddedPostgres(tmp_path / "pg", database="ema")
    with server:
        pid = server.pid
        assert pid is not None and psutil.pid_exists(pid)
        assert server.url.startswith("postgresql+psycopg://")
        assert _scalar(server.url, "select 1") == 1
        _scalar(server.url, "create table kept (x int)", "insert into kept values (7)", "select 1")
    assert not psutil.pid_exists(pid)

    with server:
        restarted_pid = server.pid
        assert _scalar(server.url, "select x from kept") == 7
    assert restarted_pid is not None and not psutil.pid_exists(restarted_pid)
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(server.data_dir) in " ".join(p.info["cmdline"] or [])
    ]


def test_embedded_valkey_runs_persists_and_stops(tmp_path):
    server = EmbeddedValkey(tmp_path / "valkey", port=_free_port())
    with server:
        pid = server.pid
        assert pid is not None and psutil.pid_exists(pid)
        assert redis_reachable(server.url)
        client = redis.Redis.from_url(server.url)
        assert client.ping() is True
        client.set("kept", "yes")
        client.close()
    assert not psutil.pid_exists(pid)
    assert not redis_reachable(f"redis://127.0.0.1:{server.port}/0")

    with server:
        client = redis.Redis.from_url(server.url)
        assert client.get("kept") == b"yes"
        client.close()
        restarted_pid = server.pid
    assert restarted_pid is not None and not psutil.pid_exists(restarted_pid)


def test_system_postgres_probe_matches_reality():
    # The conftest picks system vs embedded Postgres with this probe; it must not claim a closed port.
    assert postgres_reachable("127.0.0.1", _free_port()) is False


def test_redis_fixtures_give_a_working_server_and_private_prefix(redis_url, redis_prefix):
    assert redis_prefix.startswith("ematest")
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(f"{redis_prefix}:probe", "1", ex=60)
        assert client.get(f"{redis_prefix}:probe") == b"1"
    finally:
        client.close()


def _pids_under(data_dir) -> list[int]:
    """Live processes (not zombies) whose command line names ``data_dir``: the servers of that stack."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and str(data_dir) in " ".join(
            proc.info["cmdline"] or []
        ):
            found.append(proc.info["pid"])
    return found


def _wait_until_none(data_dir, timeout_s: float = 60.0) -> list[int]:
    import time

    deadline = time.monotonic() + timeout_s
    while (left := _pids_under(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_detached_servers_run_in_their_own_session_and_stop_in_order(tmp_path):
    import os

    from common.embedded import DetachedServers

    servers = DetachedServers(tmp_path, postgres=True, valkey_port=_free_port()).start()
    try:
        assert servers.database_url and servers.redis_url
        assert _scalar(servers.database_url, "SELECT 41 + 1") == 42
        assert redis_reachable(servers.redis_url)
        child = servers.pid
        assert child is not None and os.getsid(child) == child != os.getsid(0)  # a session of its own
    finally:
        servers.stop()
    assert _wait_until_none(tmp_path) == []


def test_detached_servers_stop_when_their_launcher_is_killed(tmp_path):
    """Even a SIGKILLed parent (no cleanup code runs) leaves no server: the child sees its stdin close."""
    import subprocess
    import sys

    port = _free_port()
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from common.embedded import DetachedServers; "
            f"s = DetachedServers(Path(sys.argv[1]), postgres=True, valkey_port={port}).start(); "
            "print(s.redis_url, flush=True); time.sleep(600)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = parent.stdout.readline().strip()
        assert url and redis_reachable(url)
        assert _pids_under(tmp_path), "no server found for the data directory"
    finally:
        parent.kill()
        parent.wait()
    assert _wait_until_none(tmp_path) == []
    assert not redis_reachable(f"redis://127.0.0.1:{port}/0")


def test_detached_servers_report_a_taken_port_as_the_same_error(tmp_path):
    from common.embedded import DetachedServers
    from common.errors import StreamUnavailable

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(StreamUnavailable, match="embedded Valkey failed to start") as info:
            DetachedServers(tmp_path, postgres=False, valkey_port=port).start()
    assert info.value.details["port"] == port
