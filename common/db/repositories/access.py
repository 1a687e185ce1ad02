"""Tenant API keys, agent accounts and their sessions, and the audit log.

Part of :mod:`common.db.repositories` (the caller owns the transaction; see there)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from common.db.models import AgentAccount, AgentSession, ApiKey, AuditEntry


async def insert_api_key(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    name: str,
    prefix: str,
    token_hash: str,
    scopes: list[str],
    expires_at: datetime | None,
    created_by: str,
) -> ApiKey:
    """Store a new key (its hash only)."""
    row = ApiKey(
        tenant_id=tenant_id,
        name=name,
        prefix=prefix,
        token_hash=token_hash,
        scopes=scopes,
        expires_at=expires_at,
        created_by=created_by,
    )
    session.add(row)
    await session.flush()
    return row


async def find_api_key(session: AsyncSession, *, prefix: str) -> ApiKey | None:
    """The key with this public prefix (revoked and expired ones included: the caller decides)."""
    return (await session.scalars(select(ApiKey).where(ApiKey.prefix == prefix))).one_or_none()


async def list_api_keys(session: AsyncSession, *, tenant_id: uuid.UUID) -> list[ApiKey]:
    """A tenant's keys, newest first."""
    stmt = (
        select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at.desc(), ApiKey.prefix)
    )
    return list(await session.scalars(stmt))


async def revoke_api_key(session: AsyncSession, *, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
    """Mark the tenant's key revoked (idempotent: the first revocation time stays); None if no such key."""
    await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    stmt = select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id)
    return (await session.scalars(stmt.execution_options(populate_existing=True))).one_or_none()


async def insert_audit(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID | None,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one audit entry."""
    row = AuditEntry(
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        before=before,
        after=after,
    )
    session.add(row)
    await session.flush()
    return row


async def list_audit(
    session: AsyncSession, *, tenant_id: uuid.UUID | None, limit: int, before: datetime | None = None
) -> list[AuditEntry]:
    """A tenant's audit entries (``None``: the operator's, outside any tenant), newest first."""
    condition = AuditEntry.tenant_id.is_(None) if tenant_id is None else AuditEntry.tenant_id == tenant_id
    stmt = select(AuditEntry).where(condition)
    if before is not None:
        stmt = stmt.where(AuditEntry.at < before)
    return list(await session.scalars(stmt.order_by(AuditEntry.at.desc()).limit(limit)))


async def find_agent_account(
    session: AsyncSession, *, tenant_id: uuid.UUID, email: str
) -> AgentAccount | None:
    """The tenant's account with this (lower-cased) email, or None."""
    stmt = select(AgentAccount).where(AgentAccount.tenant_id == tenant_id, AgentAccount.email == email)
    return (await session.scalars(stmt)).one_or_none()


async def get_agent_account(
    session: AsyncSession, *, agent_id: uuid.UUID, tenant_id: uuid.UUID | None = None
) -> AgentAccount | None:
    """An account by id; with ``tenant_id``, None for another tenant's."""
    stmt = select(AgentAccount).where(AgentAccount.id == agent_id)
    if tenant_id is not None:
        stmt = stmt.where(AgentAccount.tenant_id == tenant_id)
    return (await session.scalars(stmt)).one_or_none()


async def list_agent_accounts(session: AsyncSession, *, tenant_id: uuid.UUID) -> list[AgentAccount]:
    """The tenant's accounts, by email."""
    stmt = select(AgentAccount).where(AgentAccount.tenant_id == tenant_id).order_by(AgentAccount.email)
    return list((await session.scalars(stmt)).all())


async def find_agent_session(
    session: AsyncSession, *, prefix: str
) -> tuple[AgentSession, AgentAccount] | None:
    """A session by its token prefix, with its account."""
    stmt = (
        select(AgentSession, AgentAccount)
        .join(AgentAccount, AgentAccount.id == AgentSession.agent_id)
        .where(AgentSession.prefix == prefix)
    )
    found = (await session.execute(stmt)).one_or_none()
    return None if found is None else found.tuple()


async def revoke_agent_sessions(
    session: AsyncSession, *, agent_id: uuid.UUID, session_id: uuid.UUID | None = None
) -> list[str]:
    """Revoke one session of an agent, or all of them; the prefixes revoked (to drop from caches)."""
    stmt = update(AgentSession).where(AgentSession.agent_id == agent_id, AgentSession.revoked_at.is_(None))
    if session_id is not None:
        stmt = stmt.where(AgentSession.id == session_id)
    rows = await session.execute(stmt.values(revoked_at=func.now()).returning(AgentSession.prefix))
    return [r[0] for r in rows]
