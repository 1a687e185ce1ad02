"""Fixtures of the fault tests: a freshly migrated database per module (the relay reads every outbox row
of its database, so it must see only this module's), and the provider SIMULATOR."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from common.db import migrate
from serve_apps.simulator import SimulatorServer


@pytest.fixture(scope="module")
def chaos_db(make_database: Callable[[], str]) -> str:
    url = make_database()
    migrate.upgrade(url)
    return url


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    from tests.chaos.harness import META_TOKEN

    with SimulatorServer(meta_access_token=META_TOKEN) as sim:
        yield sim


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
