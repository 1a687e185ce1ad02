"""Redis Streams: the producer, one consumer-group consumer for every worker, and the key names.

Payloads are JSON in a single ``data`` field so any consumer (Python, Go, a dispatcher in another
language) reads them the same way. Streams are capped approximately so a stalled consumer cannot
grow Redis without bound; the cap is far above any sane backlog.

:class:`StreamConsumer` holds the consumer-group mechanics the three workers share (the inbound
worker, the outbound dispatcher, the ingestion worker): group creation (``BUSYGROUP`` tolerated),
``XAUTOCLAIM`` of entries another consumer left pending, ``XREADGROUP`` of new ones (RESP2 and RESP3
replies), ``XACK``, and dead-lettering, which appends to the dead-letter stream and acknowledges in
one ``MULTI`` so an entry is never lost between the two nor left pending after being given up. What an
entry means and when it is given up stays with each worker.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from common import metrics
from common.config import RedisSettings
from common.errors import StreamUnavailable

OUTBOUND_STREAM = "outbound"
INBOUND_STREAM = "inbound"
STREAM_MAXLEN = 1_000_000


def stream_key(settings: RedisSettings, name: str) -> str:
    """Full key of a logical stream: ``<prefix>:stream:<name>`` (the one spelling of a stream key)."""
    return settings.key("stream", name)


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
        return stream_key(self._settings, stream)

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


@dataclass(frozen=True)
class StreamEntry:
    """One entry handed to a consumer: its id, its fields, and how often the group delivered it."""

    id: str
    fields: dict[str, str]
    #: 1 for a fresh read; for a reclaimed entry, Redis's delivery counter (when asked for).
    deliveries: int = 1


def _entries(reply: Any) -> list[tuple[str, dict[str, str] | None]]:
    """The entries of an ``XREADGROUP`` reply as redis-py parses it: RESP2 ``[[stream, entries]]``,
    RESP3 ``{stream: [entries]}`` (one more list); empty when the read timed out."""
    if not reply:
        return []
    if isinstance(reply, dict):
        batches = [entries for per_stream in reply.values() for entries in per_stream]
    else:
        batches = [entries for _stream, entries in reply]
    return [(str(entry_id), fields) for entries in batches for entry_id, fields in entries]


async def last_entry_id(redis: aioredis.Redis, key: str) -> str:
    """The id of the newest entry of ``key`` (``0-0`` for an empty stream): where a reader that wants
    only what comes next starts, without the gap that re-sending ``$`` on every read would leave."""
    newest: Any = await redis.xrevrange(key, count=1)
    return str(newest[0][0]) if newest else "0-0"


async def read_after(
    redis: aioredis.Redis, key: str, after: str, *, count: int, block_ms: int
) -> list[StreamEntry]:
    """Entries of ``key`` newer than ``after`` (plain ``XREAD``: every reader sees every entry, no group),
    waiting up to ``block_ms`` for the first."""
    reply: Any = await redis.xread({key: after}, count=count, block=block_ms)
    return [StreamEntry(entry_id, fields) for entry_id, fields in _entries(reply) if fields]


class StreamConsumer:
    """One consumer (``consumer``) of one consumer group (``group``) on one stream, with its dead letters.

    ``stream`` and ``dead_stream`` are logical names (``inbound``, ``inbound-dead``); keys come from
    :func:`stream_key`. Redis errors propagate as :class:`redis.exceptions.RedisError`: each worker
    decides whether it waits an outage out.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: RedisSettings,
        *,
        stream: str,
        dead_stream: str,
        group: str,
        consumer: str,
    ) -> None:
        self._redis = redis
        self.stream_name = stream
        self.dead_stream_name = dead_stream
        self.stream = stream_key(settings, stream)
        self.dead_stream = stream_key(settings, dead_stream)
        self.group = group
        self.consumer = consumer
        self._group_ready = False

    async def ensure_group(self) -> None:
        """Create the group (and the stream) if missing, from id 0 so entries added earlier count too."""
        if self._group_ready:
            return
        try:
            await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def claim_stale(
        self, *, min_idle_ms: int, count: int, with_deliveries: bool = False
    ) -> list[StreamEntry]:
        """Take over up to ``count`` entries pending for longer than ``min_idle_ms`` (``XAUTOCLAIM``).

        Entries trimmed from the stream while pending have no fields left: they are acknowledged here
        (there is nothing to process) and not returned. ``with_deliveries`` reads each entry's delivery
        counter (one ``XPENDING`` each) for workers that bound redeliveries.
        """
        await self.ensure_group()
        answer: Any = await self._redis.xautoclaim(
            self.stream, self.group, self.consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count
        )
        # [next_start, [(id, fields), ...], deleted_ids] (Redis 7; 6.2 returns trimmed ones as None).
        out: list[StreamEntry] = []
        for entry_id, fields in answer[1]:
            if not fields:
                await self.ack(str(entry_id))
                continue
            deliveries = 1
            if with_deliveries:
                pending: Any = await self._redis.xpending_range(
                    self.stream, self.group, min=entry_id, max=entry_id, count=1
                )
                deliveries = int(pending[0]["times_delivered"]) if pending else 1
            out.append(StreamEntry(str(entry_id), fields, deliveries))
        return out

    async def read_new(self, *, count: int, block_ms: int | None) -> list[StreamEntry]:
        """Up to ``count`` entries never delivered to this group (``XREADGROUP >``), waiting up to
        ``block_ms`` for the first (``None``: do not wait)."""
        await self.ensure_group()
        reply: Any = await self._redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms or None
        )
        return [StreamEntry(entry_id, fields) for entry_id, fields in _entries(reply) if fields]

    async def ack(self, entry_id: str) -> None:
        """``XACK``: the entry's fate is settled."""
        await self._redis.xack(self.stream, self.group, entry_id)

    async def dead_letter(self, entry_id: str, record: Mapping[str, str]) -> None:
        """Append ``record`` to the dead-letter stream and acknowledge the entry, in one ``MULTI``."""
        async with self._redis.pipeline(transaction=True) as pipe:
            fields: dict[FieldT, EncodableT] = {key: value for key, value in record.items()}
            pipe.xadd(self.dead_stream, fields, maxlen=STREAM_MAXLEN, approximate=True)
            pipe.xack(self.stream, self.group, entry_id)
            await pipe.execute()
        metrics.inc("ema_dead_letters_total", stream=self.dead_stream_name)
