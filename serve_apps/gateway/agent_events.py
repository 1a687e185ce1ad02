"""The live queue of the agent console: ``GET /v1/agents/brands/{brand_id}/events`` (SSE).

The events are the ``agent-events`` stream's (:class:`common.conversation.escalation.AgentEvent`:
``handoff``, ``agent_reply``, ``released``, ``taken_over``), written through the outbox in the same
transaction as the change they announce. Each console reads the stream with plain ``XREAD`` (no consumer
group: every console sees every event) and keeps only its tenant's and brand's. The SSE ``id`` is the
stream entry id, so a reconnecting ``Last-Event-ID`` resumes exactly after the last event seen.

The console reads it with ``fetch`` (not ``EventSource``) so that the session token travels in the
``Authorization`` header, never in a URL.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import redis.asyncio as aioredis
from pydantic import ValidationError

from common.config import Settings
from common.conversation.escalation import AgentEvent
from common.streams import decode_entry, last_entry_id, read_after, stream_key

RETRY_MS = 3000
BLOCK_MS = 1000
#: A stream entry id (``<ms>-<seq>``): anything else in ``Last-Event-ID`` is ignored.
ENTRY_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")


async def queue_events(
    *,
    settings: Settings,
    redis: aioredis.Redis,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    after: str | None,
    is_disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """SSE frames of the brand's agent events until the client leaves or ``WEBCHAT__SSE_MAX_S`` passes."""
    key = stream_key(settings.redis, settings.escalation.events_stream)
    last = after if after is not None and ENTRY_ID.fullmatch(after) else await last_entry_id(redis, key)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.webchat.sse_max_s
    next_beat = loop.time() + settings.webchat.heartbeat_s
    yield f"retry: {RETRY_MS}\n: connected\n\n"
    while loop.time() < deadline and not await is_disconnected():
        entries = await read_after(redis, key, last, count=100, block_ms=BLOCK_MS)
        if not entries and loop.time() >= next_beat:
            next_beat = loop.time() + settings.webchat.heartbeat_s
            yield ": heartbeat\n\n"
        for entry in entries:
            last = entry.id
            try:
                event = AgentEvent.model_validate(decode_entry(entry.fields))
            except (ValueError, KeyError, ValidationError):
                continue  # not an event this console can show; the stream's other readers decide
            if event.tenant_id != tenant_id or event.brand_id != brand_id:
                continue
            data = json.dumps(event.model_dump(mode="json"))
            yield f"id: {entry.id}\nevent: {event.kind}\ndata: {data}\n\n"
