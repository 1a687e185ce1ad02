"""Fault: Postgres (an embedded server this test owns) stops mid-load and comes back.

While it is down the gateway cannot store a webhook, so it must not acknowledge it: the provider gets a
5xx and redelivers (the test client retries like a provider). Afterwards every 2xx-acknowledged webhook
has one inbound row, one reply and one send at the SIMULATOR.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from common.db import migrate
from common.embedded import EmbeddedPostgres
from serve_apps.simulator import SimulatorServer
from tests.chaos.harness import chaos_settings, chaos_stack, endpoints_for, error_window, figure

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


async def test_postgres_outage_mid_load_gets_5xx_then_nothing_acknowledged_is_missing(
    simulator: SimulatorServer, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", database="chaos").start()
    try:
        url = pg.url
        migrate.upgrade(url)
        endpoints = endpoints_for(url, redis_url, redis_prefix, tmp_path / "q")
        async with chaos_stack(
            settings=chaos_settings(simulator), endpoints=endpoints, sim=simulator
        ) as stack:
            load = asyncio.create_task(stack.load(rate_per_s=10, duration_s=10))
            await asyncio.sleep(2.5)
            down_at = time.monotonic()
            await asyncio.to_thread(pg.stop)
            stop_s = time.monotonic() - down_at
            await asyncio.sleep(2.0)
            up_at = time.monotonic()
            await asyncio.to_thread(pg.start)
            start_s = time.monotonic() - up_at
            outage_s = time.monotonic() - down_at
            assert pg.url == url  # same socket: the app's pools reconnect without a restart
            await load
            counts = await stack.wait_all_sent(timeout_s=90)
            non_2xx, window = error_window(stack.acks)
            statuses = sorted({s for a in stack.acks for _, s in a.statuses if not 200 <= s < 300})
            figure(
                "postgres-restart",
                webhooks=len(stack.acks),
                acked=sum(a.acked for a in stack.acks),
                outage_s=f"{outage_s:.1f}",
                stop_s=f"{stop_s:.1f}",
                start_s=f"{start_s:.1f}",
                non_2xx=non_2xx,
                non_2xx_statuses=statuses,
                error_window_s=f"{window:.1f}",
                inbound=counts.inbound,
                replies=counts.replies,
                sends=counts.sends,
                duplicate_sends=counts.duplicate_sends,
            )
            assert not stack.dead_tasks(), stack.dead_tasks()
            assert non_2xx > 0 and statuses == [503], statuses  # stored nothing → 503, provider retries
            assert all(a.acked for a in stack.acks)  # every redelivery eventually got its 2xx
            n = len(stack.acks)
            assert (counts.inbound, counts.replies, counts.sends) == (n, n, n), counts
            assert counts.duplicate_sends == 0 and not counts.unanswered
    finally:
        pg.stop()
