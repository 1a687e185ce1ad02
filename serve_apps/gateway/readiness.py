"""The readiness checks every backend reports: Postgres and Redis answer."""

from __future__ import annotations

import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.logging import get_logger

log = get_logger(__name__)


async def database_ready(sessionmaker: async_sessionmaker[AsyncSession]) -> bool:
    """``select 1`` through the pool; False on any database error."""
    try:
        async with sessionmaker() as session:
            await session.execute(text("select 1"))
    except Exception as exc:  # readiness must answer, whatever the driver raised
        log.warning("readiness_database_failed", error=str(exc))
        return False
    return True


async def dependencies_ready(
    sessionmaker: async_sessionmaker[AsyncSession], redis: aioredis.Redis
) -> dict[str, bool]:
    """Postgres answers ``select 1`` and Redis answers ``PING``."""
    try:
        redis_ok = bool(await redis.ping())
    except Exception as exc:  # readiness must answer, whatever redis-py raised
        log.warning("readiness_redis_failed", error=str(exc))
        redis_ok = False
    return {"database": await database_ready(sessionmaker), "redis": redis_ok}
