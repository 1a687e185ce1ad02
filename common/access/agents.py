"""Agent accounts: the people of a tenant who answer customers, under the API (``/v1/agent-accounts``,
``/v1/agents/sessions``) and the CLI (``python -m serve_apps.admin agents ...``).

Passwords are hashed with argon2id (``argon2-cffi``'s defaults, the OWASP recommendation) and never
stored or logged; a hash made with older parameters is re-hashed on the next sign-in. Signing in gives a
session token ``eas_<prefix>_<secret>`` (shown once, stored as a SHA-256 like API keys) that expires after
``API__AGENT_SESSION_HOURS``; signing out, disabling the account or changing its password revokes it.

Unknown email and wrong password get the same 401, and an unknown email still pays for one argon2
verification, so neither the answer nor its timing tells which accounts exist.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.access import keys
from common.access.management import audit
from common.access.principal import Principal, Role
from common.db import repositories as repo
from common.db.models import AgentAccount, AgentSession
from common.errors import Conflict, InvalidInput, NotFound, Unauthorized

_HASHER = PasswordHasher()
#: Verified against when the email is unknown, so that path costs what a wrong password costs.
_DUMMY_HASH = _HASHER.hash("not a password anyone has")
EMAIL = r"^[^@\s]{1,64}@[^@\s]{1,255}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentAccountIn(_Model):
    """``POST /v1/agent-accounts``."""

    email: str = Field(pattern=EMAIL, max_length=320)
    display_name: str = Field(min_length=1, max_length=200)
    role: Role = Role.AGENT
    brand_ids: list[uuid.UUID] | None = Field(default=None, description="None: every brand of the tenant")
    password: SecretStr = Field(min_length=12, max_length=1024)

    _lower = field_validator("email")(lambda v: v.lower())


class AgentAccountPatch(_Model):
    """``PATCH /v1/agent-accounts/{id}``: the fields to change."""

    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    role: Role | None = None
    brand_ids: list[uuid.UUID] | None = None
    all_brands: bool = Field(default=False, description="Lift the brand limit (brand_ids: null)")
    disabled: bool | None = None
    password: SecretStr | None = Field(default=None, min_length=12, max_length=1024)


class AgentAccountOut(_Model):
    """An account as the API shows it (never its password hash)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    email: str
    display_name: str
    role: Role
    brand_ids: list[uuid.UUID] | None
    disabled: bool
    created_at: datetime


class SignInIn(_Model):
    """``POST /v1/agents/sessions``: the tenant (its slug), the email and the password."""

    tenant: str = Field(min_length=1, max_length=100)
    email: str = Field(min_length=3, max_length=320)
    password: SecretStr = Field(min_length=1, max_length=1024)


class SessionOut(_Model):
    """A new session: ``token`` is shown once."""

    token: str
    expires_at: datetime
    agent: AgentAccountOut


def account_out(row: AgentAccount) -> AgentAccountOut:
    """API view of an account."""
    return AgentAccountOut(
        id=row.id,
        tenant_id=row.tenant_id,
        email=row.email,
        display_name=row.display_name,
        role=Role(row.role),
        brand_ids=None if row.brand_ids is None else [uuid.UUID(b) for b in row.brand_ids],
        disabled=row.disabled_at is not None,
        created_at=row.created_at,
    )


class AgentAccounts:
    """Create, list and change accounts (tenant ``admin``); sign in and out (the agents themselves)."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], *, session_hours: float = 12.0
    ) -> None:
        self._sessionmaker = sessionmaker
        self._session_hours = session_hours

    async def create(self, actor: Principal, tenant_id: uuid.UUID, body: AgentAccountIn) -> AgentAccountOut:
        """A new account; 409 when the tenant has one with this email."""
        async with self._sessionmaker() as session:
            if await repo.get_tenant(session, tenant_id=tenant_id) is None:  # the CLI names any tenant
                raise NotFound("unknown tenant", details={"tenant_id": str(tenant_id)})
            await self._check_brands(session, tenant_id, body.role, body.brand_ids)
            row = AgentAccount(
                tenant_id=tenant_id,
                email=body.email,
                display_name=body.display_name,
                role=body.role.value,
                brand_ids=_brand_list(body.brand_ids),
                password_hash=_HASHER.hash(body.password.get_secret_value()),
            )
            session.add(row)
            try:
                await session.flush()
            except IntegrityError as exc:
                raise Conflict(
                    "the tenant has an agent with this email", details={"email": body.email}
                ) from exc
            out = account_out(row)
            await audit(session, actor, tenant_id, "agent_account.create", "agent_account", row.id, after=out)
            await session.commit()
        return out

    async def list_accounts(self, actor: Principal, tenant_id: uuid.UUID) -> list[AgentAccountOut]:
        """The tenant's accounts."""
        async with self._sessionmaker() as session:
            return [account_out(r) for r in await repo.list_agent_accounts(session, tenant_id=tenant_id)]

    async def update(
        self, actor: Principal, tenant_id: uuid.UUID, agent_id: uuid.UUID, patch: AgentAccountPatch
    ) -> tuple[AgentAccountOut, list[str]]:
        """Change an account; disabling it or setting a password signs it out everywhere.

        Returns the account and the prefixes of the sessions revoked (for the caller's cache).
        """
        async with self._sessionmaker() as session:
            row = await repo.get_agent_account(session, agent_id=agent_id, tenant_id=tenant_id)
            if row is None:
                raise NotFound("unknown agent account", details={"agent_id": str(agent_id)})
            before = account_out(row)
            role = patch.role or Role(row.role)
            brands = (
                None
                if patch.all_brands
                else (patch.brand_ids if patch.brand_ids is not None else before.brand_ids)
            )
            await self._check_brands(session, tenant_id, role, brands)
            row.role, row.brand_ids = role.value, _brand_list(brands)
            if patch.display_name is not None:
                row.display_name = patch.display_name
            signed_out: list[str] = []
            if patch.password is not None:
                row.password_hash = _HASHER.hash(patch.password.get_secret_value())
                signed_out = await repo.revoke_agent_sessions(session, agent_id=agent_id)
            if patch.disabled is not None:
                row.disabled_at = datetime.now(UTC) if patch.disabled else None
                if patch.disabled:
                    signed_out = await repo.revoke_agent_sessions(session, agent_id=agent_id)
            await session.flush()
            out = account_out(row)
            changes: dict[str, Any] = out.model_dump(mode="json")
            if patch.password is not None:
                changes["password_changed"] = True  # that it changed, never what to
            await audit(
                session,
                actor,
                tenant_id,
                "agent_account.update",
                "agent_account",
                agent_id,
                before=before,
                after=changes,
            )
            await session.commit()
        return out, signed_out

    async def sign_in(self, body: SignInIn) -> SessionOut:
        """A session for the right email and password of a live account; the same 401 otherwise."""
        refused = Unauthorized("wrong tenant, email or password")
        async with self._sessionmaker() as session:
            tenant = await repo.find_tenant_by_slug(session, slug=body.tenant)
            row = (
                None
                if tenant is None
                else await repo.find_agent_account(session, tenant_id=tenant.id, email=body.email.lower())
            )
            if (
                not _verify(row.password_hash if row is not None else _DUMMY_HASH, body.password)
                or row is None
            ):
                raise refused
            if row.disabled_at is not None:
                raise refused
            if _HASHER.check_needs_rehash(row.password_hash):
                row.password_hash = _HASHER.hash(body.password.get_secret_value())
            token = keys.new_token(keys.SESSION_PREFIX)
            expires = datetime.now(UTC) + timedelta(hours=self._session_hours)
            session.add(
                AgentSession(
                    agent_id=row.id, prefix=token.prefix, token_hash=token.token_hash, expires_at=expires
                )
            )
            await session.flush()
            agent = account_out(row)
            actor = Principal(actor=f"agent:{row.email}", scopes=frozenset(), tenant_id=row.tenant_id)
            await audit(
                session,
                actor,
                row.tenant_id,
                "agent.sign_in",
                "agent_account",
                row.id,
                after={"session": token.prefix},
            )
            await session.commit()
        return SessionOut(token=token.token, expires_at=expires, agent=agent)

    async def sign_out(self, caller: Principal) -> list[str]:
        """End the caller's own session; the prefixes revoked (none for an API key: nothing to end)."""
        if caller.agent_id is None or caller.session_id is None:
            return []
        async with self._sessionmaker() as session:
            revoked = await repo.revoke_agent_sessions(
                session, agent_id=caller.agent_id, session_id=caller.session_id
            )
            await audit(session, caller, caller.tenant_id, "agent.sign_out", "agent_account", caller.agent_id)
            await session.commit()
        return revoked

    @staticmethod
    async def _check_brands(
        session: AsyncSession, tenant_id: uuid.UUID, role: Role, brand_ids: list[uuid.UUID] | None
    ) -> None:
        if brand_ids is None:
            return
        if role is Role.ADMIN:
            raise InvalidInput("an admin account cannot be limited to brands (it manages the tenant)")
        if not brand_ids:
            raise InvalidInput("brand_ids must name at least one brand (or be null for every brand)")
        for brand_id in brand_ids:  # each must be the tenant's: another tenant's is an unknown brand
            await repo.require_brand(session, brand_id=brand_id, tenant_id=tenant_id)


def _brand_list(brand_ids: list[uuid.UUID] | None) -> list[str] | None:
    return None if brand_ids is None else sorted({str(b) for b in brand_ids})


def _verify(stored: str, password: SecretStr) -> bool:
    try:
        return _HASHER.verify(stored, password.get_secret_value())
    except (VerificationError, InvalidHashError):
        return False
