"""Fast reachability probes used to pick system or embedded servers."""

from __future__ import annotations

import socket
import time

from common.embedded import postgres_reachable, redis_reachable


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_postgres_reachable_false_fast_on_closed_port():
    started = time.monotonic()
    assert postgres_reachable("127.0.0.1", _closed_port()) is False
    assert time.monotonic() - started < 1.0


def test_postgres_reachable_true_on_listening_socket():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert postgres_reachable("127.0.0.1", server.getsockname()[1]) is True


def test_redis_reachable_false_on_closed_port():
    assert redis_reachable(f"redis://127.0.0.1:{_closed_port()}/0") is False


def test_redis_reachable_false_when_peer_is_not_redis():
    # A listener that never answers: PING must time out quickly, not hang.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        started = time.monotonic()
        assert redis_reachable(f"redis://127.0.0.1:{server.getsockname()[1]}/0", timeout_s=0.3) is False
        assert time.monotonic() - started < 2.0
