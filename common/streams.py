"""Redis Streams helpers: the outbound stream producer (and, later, consumer-group helpers).

Payloads are JSON in a single ``data`` field so any consumer (Python, Go, a dispatcher in another
language) reads them the same way. Streams are capped approximately so a stalled consumer cannot
grow Redis without bound; the cap is far above any sane backlog.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common.config import RedisSettings
from common.errors import StreamUnavailable

OUTBOUND_STREAM = "outbound"
INBOUND_STREAM = "inbound"
STREAM_MAXLEN = 1_000_000


def connect(settings: RedisSettings, *, url: str | None = None) -> aioredis.Redis:
    """An asyncio Redis client for ``url`` (or the configured one)."""
    target = url or settings.url
    if not target:
        raise StreamUnavailable("no Redis URL configured (the launcher sets one for embedded Valkey)")
    return aioredis.Redis.from_url(target, decode_responses=True, socket_timeout=5, socket_connect_timeout=2)


class StreamPublisher:
    """Appends JSON payloads to namespaced streams."""

    def __init__(self, client: aioredis.Redis, settings: RedisSettings) -> None:
        self._client = client
        self._settings = settings

    def stream_name(self, stream: str) -> str:
        """Full key of a logical stream (``<prefix>:stream:<name>``)."""
        return self._settings.key("stream", stream)

    async def publish(self, stream: str, payload: dict[str, Any]) -> str:
        """XADD the payload; returns the entry id. Raises StreamUnavailable on Redis errors."""
        try:
            entry_id = await self._client.xadd(
                self.stream_name(stream),
                {"data": json.dumps(payload, separators=(",", ":"), default=str)},
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
        except RedisError as exc:
            raise StreamUnavailable(f"could not publish to stream {stream!r}: {exc}") from exc
        return str(entry_id)

    async def aclose(self) -> None:
        """Close the underlying connection pool."""
        await self._client.aclose()


def decode_entry(fields: dict[str, str]) -> dict[str, Any]:
    """Inverse of :meth:`StreamPublisher.publish` for one entry's fields."""
    data = json.loads(fields["data"])
    if not isinstance(data, dict):
        raise ValueError("stream entry 'data' is not a JSON object")
    return data
