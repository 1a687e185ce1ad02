"""Tenant API keys for tests, minted through the real management service (not a double)."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.access.management import KeyIn, Management
from common.access.principal import Scope, operator_principal
from common.db.session import make_engine, make_sessionmaker


async def key_token(
    sessionmaker: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID, *scopes: Scope
) -> str:
    """A new key of the tenant with ``scopes`` (default ``admin``)."""
    created = await Management(sessionmaker).create_key(
        operator_principal("operator:test"),
        tenant_id,
        KeyIn(name="test key", scopes=list(scopes or (Scope.ADMIN,))),
    )
    return created.token


async def key_headers(
    sessionmaker: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID, *scopes: Scope
) -> dict[str, str]:
    """``Authorization`` header of a new key of the tenant."""
    return {"authorization": f"Bearer {await key_token(sessionmaker, tenant_id, *scopes)}"}


def key_headers_sync(database_url: str, tenant_id: uuid.UUID, *scopes: Scope) -> dict[str, str]:
    """:func:`key_headers` for synchronous tests (its own engine and event loop)."""

    async def mint() -> dict[str, str]:
        engine = make_engine(database_url, pool_size=1)
        try:
            return await key_headers(make_sessionmaker(engine), tenant_id, *scopes)
        finally:
            await engine.dispose()

    return asyncio.run(mint())
