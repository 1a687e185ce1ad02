"""Operator commands: ``python -m serve_apps.admin <command>`` (see docs/RUNBOOK.md).

    streams                      lengths, consumer groups, pending and lag of every project stream
    dead-letters STREAM          list entries of STREAM-dead with their reasons
    replay-dead STREAM [--limit] move entries of STREAM-dead back onto STREAM (oldest first)

Streams are the logical names (``inbound``, ``outbound``, ``ingest-jobs``); keys are namespaced with
``REDIS__KEY_PREFIX``. Replaying is safe because every consumer is idempotent (inbound messages by
their stored id, outbound replies by their delivery record, ingestion jobs by deterministic chunk ids).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, cast

import redis.asyncio as aioredis

from common.config import Settings, get_settings
from common.streams import connect

DEAD_SUFFIX = "-dead"
KNOWN_STREAMS = ("inbound", "outbound", "ingest-jobs")


async def stream_report(client: aioredis.Redis, settings: Settings) -> list[dict[str, Any]]:
    """One row per existing stream (dead-letter streams included) with its groups' pending and lag."""
    rows: list[dict[str, Any]] = []
    for name in (*KNOWN_STREAMS, *(s + DEAD_SUFFIX for s in KNOWN_STREAMS)):
        key = settings.redis.key("stream", name)
        if not await client.exists(key):
            continue
        groups = await client.xinfo_groups(key)
        rows.append(
            {
                "stream": name,
                "length": await client.xlen(key),
                "groups": [
                    {
                        "name": g["name"],
                        "pending": g["pending"],
                        "lag": g.get("lag"),
                        "consumers": g["consumers"],
                    }
                    for g in groups
                ],
            }
        )
    return rows


async def _xrange(client: aioredis.Redis, key: str, limit: int) -> list[tuple[str, dict[str, str]]]:
    # The client decodes responses (decode_responses=True), so entries are str, not bytes.
    return cast(list[tuple[str, dict[str, str]]], await client.xrange(key, count=limit))


async def dead_letters(
    client: aioredis.Redis, settings: Settings, stream: str, limit: int
) -> list[dict[str, Any]]:
    """Entries of ``stream``'s dead-letter stream, oldest first."""
    key = settings.redis.key("stream", stream + DEAD_SUFFIX)
    entries = await _xrange(client, key, limit)
    return [{"id": entry_id, **fields} for entry_id, fields in entries]


async def replay_dead(client: aioredis.Redis, settings: Settings, stream: str, limit: int) -> int:
    """Move up to ``limit`` dead letters back onto ``stream``; returns how many moved.

    Each entry is re-added before it is deleted from the dead-letter stream, so a crash in between
    duplicates (harmless: consumers are idempotent) rather than loses.
    """
    dead_key = settings.redis.key("stream", stream + DEAD_SUFFIX)
    live_key = settings.redis.key("stream", stream)
    moved = 0
    for entry_id, fields in await _xrange(client, dead_key, limit):
        if "data" not in fields:
            continue
        await client.xadd(live_key, {"data": fields["data"]})
        await client.xdel(dead_key, entry_id)
        moved += 1
    return moved


async def _run(opts: argparse.Namespace) -> int:
    settings = get_settings()
    if not settings.redis.url:
        print("REDIS_URL is not set (the embedded Valkey of `make run` listens on redis://127.0.0.1:6390/0)")
        return 2
    client = connect(settings.redis)
    try:
        if opts.command == "streams":
            result: Any = await stream_report(client, settings)
        elif opts.command == "dead-letters":
            result = await dead_letters(client, settings, opts.stream, opts.limit)
        else:
            result = {"replayed": await replay_dead(client, settings, opts.stream, opts.limit)}
    finally:
        await client.aclose()
    print(json.dumps(result, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m serve_apps.admin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("streams", help="stream lengths, groups, pending, lag")
    for name in ("dead-letters", "replay-dead"):
        cmd = sub.add_parser(name)
        cmd.add_argument("stream", choices=KNOWN_STREAMS)
        cmd.add_argument("--limit", type=int, default=100)
    return asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
