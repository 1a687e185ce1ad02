"""Fault: Redis (an embedded Valkey this test owns, append-only persistence) restarts mid-load.

Webhooks keep being accepted while Redis is down: the inbound row and its outbox row are committed in
Postgres, the immediate publish fails and is deferred, and the outbox relay re-publishes once Redis is
back. Counted at the end: every 2xx-acknowledged webhook has one inbound row, one reply, one send.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from common.embedded import EmbeddedValkey
from serve_apps.simulator import SimulatorServer
from tests.chaos.conftest import free_port
from tests.chaos.harness import chaos_settings, chaos_stack, endpoints_for, error_window, figure

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


async def _stream_entries(stack) -> int:
    key = stack.settings.redis.key
    return int(await stack.redis.xlen(key("stream", "inbound"))) + int(
        await stack.redis.xlen(key("stream", "outbound"))
    )


async def test_redis_restart_mid_load_loses_no_committed_reply(
    chaos_db: str, simulator: SimulatorServer, tmp_path: Path
) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey", port=free_port()).start()
    try:
        endpoints = endpoints_for(chaos_db, valkey.url, "ema-test", tmp_path / "q")
        async with chaos_stack(
            settings=chaos_settings(simulator), endpoints=endpoints, sim=simulator
        ) as stack:
            load = asyncio.create_task(stack.load(rate_per_s=10, duration_s=8))
            await asyncio.sleep(2.5)
            entries_before = await _stream_entries(stack)
            down_at = time.monotonic()
            valkey.stop()
            await asyncio.sleep(2.0)  # webhooks keep arriving; their publishes are deferred
            relay_before = stack.relay.published_total
            deferred = await stack.unpublished_outbox()
            valkey.start()
            outage_s = time.monotonic() - down_at
            entries_after = await _stream_entries(stack)
            await load
            counts = await stack.wait_all_sent(timeout_s=90)
            republished = stack.relay.published_total - relay_before
            non_2xx, _window = error_window(stack.acks)
            figure(
                "redis-restart",
                webhooks=len(stack.acks),
                acked=sum(a.acked for a in stack.acks),
                outage_s=f"{outage_s:.1f}",
                stream_entries_before_stop=entries_before,
                stream_entries_recovered=entries_after,
                outbox_rows_deferred=deferred,
                relay_republished=republished,
                non_2xx=non_2xx,
                inbound=counts.inbound,
                replies=counts.replies,
                sends=counts.sends,
                duplicate_sends=counts.duplicate_sends,
            )
            assert not stack.dead_tasks(), stack.dead_tasks()
            assert all(a.acked for a in stack.acks)
            n = len(stack.acks)
            assert (counts.inbound, counts.replies, counts.sends) == (n, n, n), counts
            assert counts.duplicate_sends == 0 and not counts.unanswered
            # The fault really happened: messages were committed while Redis was down, and went out
            # through the relay afterwards; the persisted streams came back whole.
            assert deferred > 0 and republished >= deferred
            assert entries_after >= entries_before
            assert await stack.unpublished_outbox() == 0
    finally:
        valkey.stop()
