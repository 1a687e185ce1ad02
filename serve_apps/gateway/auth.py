"""Authentication and route scopes of the gateway's API (docs/SECURITY.md has the trust model).

Every route declares what it needs, once, with :func:`requires` (a scope) or :data:`PUBLIC` (routes
that authenticate otherwise: webhook signatures, web chat widget tokens, or nothing to protect). The
authorization matrix test walks the app's route table and fails for a route that declares neither.

A bearer token is one of:

* the operator key (``API__OPERATOR_KEY``): scopes ``operator`` and ``metrics``, no tenant;
* the metrics token (``API__METRICS_TOKEN``): scope ``metrics`` only;
* a tenant API key ``ema_<prefix>_<secret>``: its tenant and scopes, looked up by prefix, compared as
  SHA-256 digests in constant time, refused when revoked or expired;
* an agent's session ``eas_<prefix>_<secret>`` (``POST /v1/agents/sessions``): the account's tenant, the
  scopes of its role and its brand limit, refused when signed out, expired or the account is disabled.

A caller limited to some brands gets 404 for any route whose path names another brand (``brand_id``),
exactly as for another tenant's brand; routes that reach a brand otherwise (a conversation, a
connection) check :meth:`Principal.sees_brand` themselves.

Anything else is a 401; a known caller without the scope is a 403; a resource of another tenant is a
404 (routes look their resources up with the principal's tenant).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.access import keys
from common.access.principal import ROLE_SCOPES, Principal, Role, Scope, operator_principal
from common.config import Settings
from common.db import repositories as repo
from common.errors import Forbidden, Unauthorized
from common.ttl_cache import TTLCache

#: What :data:`PUBLIC` routes declare instead of a scope.
PUBLIC_SCOPE = "public"


@dataclass(frozen=True, slots=True)
class _StoredKey:
    id: uuid.UUID
    tenant_id: uuid.UUID
    token_hash: str
    scopes: frozenset[Scope]
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class _StoredSession:
    id: uuid.UUID
    agent_id: uuid.UUID
    tenant_id: uuid.UUID
    email: str
    role: Role
    brand_ids: frozenset[uuid.UUID] | None
    token_hash: str
    expires_at: datetime
    revoked_at: datetime | None
    disabled: bool


class Authenticator:
    """Turns an ``Authorization`` header into a :class:`Principal` (one per gateway app)."""

    def __init__(
        self, settings: Settings, sessionmaker: Callable[[], async_sessionmaker[AsyncSession]]
    ) -> None:
        self._settings = settings
        # A callable: the in-process backends make their sessionmaker lazily.
        self._sessionmaker = sessionmaker
        self._keys: TTLCache[str, _StoredKey | None] = TTLCache(settings.api.key_cache_ttl_s)
        self._sessions: TTLCache[str, _StoredSession | None] = TTLCache(settings.api.key_cache_ttl_s)

    async def principal(self, authorization: str) -> Principal:
        """The caller; :class:`Unauthorized` for a missing, unknown, revoked or expired credential."""
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing API key", details={"header": "Authorization: Bearer <key>"})
        api = self._settings.api
        if api.operator_key is not None and keys.secret_matches(token, api.operator_key.get_secret_value()):
            return operator_principal()
        if api.metrics_token is not None and keys.secret_matches(token, api.metrics_token.get_secret_value()):
            return Principal(actor="metrics", scopes=frozenset({Scope.METRICS}))
        if token.startswith(keys.SESSION_PREFIX):
            return await self._session_principal(token)
        prefix = keys.token_prefix(token)
        stored = None if prefix is None else await self._keys.get_or_load(prefix, lambda: self._load(prefix))
        if stored is None or not keys.token_matches(token, stored.token_hash):
            raise Unauthorized("unknown API key")
        if not keys.key_is_live(revoked_at=stored.revoked_at, expires_at=stored.expires_at):
            self._keys.invalidate(prefix or "")
            raise Unauthorized("this API key is revoked or expired", details={"key_prefix": prefix})
        return Principal(
            actor=f"key:{prefix}", scopes=stored.scopes, tenant_id=stored.tenant_id, key_id=stored.id
        )

    def forget(self, prefix: str) -> None:
        """Drop a cached key or session (this replica revoked it: it takes effect here at once)."""
        self._keys.invalidate(prefix)
        self._sessions.invalidate(prefix)

    async def _session_principal(self, token: str) -> Principal:
        prefix = keys.token_prefix(token, keys.SESSION_PREFIX)
        stored = (
            None
            if prefix is None
            else await self._sessions.get_or_load(prefix, lambda: self._load_session(prefix))
        )
        if stored is None or not keys.token_matches(token, stored.token_hash):
            raise Unauthorized("unknown session: sign in again")
        if (
            not keys.key_is_live(revoked_at=stored.revoked_at, expires_at=stored.expires_at)
            or stored.disabled
        ):
            self._sessions.invalidate(prefix or "")
            raise Unauthorized("this session is signed out or expired: sign in again")
        return Principal(
            actor=f"agent:{stored.email}",
            scopes=ROLE_SCOPES[stored.role],
            tenant_id=stored.tenant_id,
            agent_id=stored.agent_id,
            session_id=stored.id,
            brand_ids=stored.brand_ids,
        )

    async def _load_session(self, prefix: str) -> _StoredSession | None:
        async with self._sessionmaker()() as session:
            found = await repo.find_agent_session(session, prefix=prefix)
        if found is None:
            return None
        row, account = found
        return _StoredSession(
            id=row.id,
            agent_id=account.id,
            tenant_id=account.tenant_id,
            email=account.email,
            role=Role(account.role),
            brand_ids=None
            if account.brand_ids is None
            else frozenset(uuid.UUID(b) for b in account.brand_ids),
            token_hash=row.token_hash,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            disabled=account.disabled_at is not None,
        )

    async def _load(self, prefix: str) -> _StoredKey | None:
        async with self._sessionmaker()() as session:
            row = await repo.find_api_key(session, prefix=prefix)
        if row is None:
            return None
        known = {s.value for s in Scope}
        return _StoredKey(
            id=row.id,
            tenant_id=row.tenant_id,
            token_hash=row.token_hash,
            scopes=frozenset(Scope(s) for s in row.scopes if s in known),
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )


def authenticator(request: Request) -> Authenticator:
    """The app's authenticator (``build_gateway_api`` puts it on ``app.state``)."""
    found: Authenticator = request.app.state.authenticator
    return found


def requires(scope: Scope) -> Any:
    """A dependency giving the route's :class:`Principal`; 401 without credentials, 403 without ``scope``.

    The scope is recorded on the dependency (``required_scope``) so the route table tells what every
    route needs.
    """

    async def check(request: Request) -> Principal:
        principal = await authenticator(request).principal(request.headers.get("authorization", ""))
        if not principal.allows(scope):
            raise Forbidden(
                f"this key lacks the {scope.value!r} scope", details={"required_scope": scope.value}
            )
        brand = _brand_of(request) if principal.brand_ids is not None else None
        if brand is not None and not principal.sees_brand(brand):
            raise repo.unknown_brand(brand)  # the same 404 as another tenant's brand
        request.state.principal = principal
        return principal

    check.required_scope = scope  # type: ignore[attr-defined]
    return Depends(check)


def _brand_of(request: Request) -> uuid.UUID | None:
    """The brand a route's path names, if any (not an id: the route's own validation answers 422)."""
    try:
        return uuid.UUID(str(request.path_params["brand_id"]))
    except (KeyError, ValueError):
        return None


async def _public() -> None:
    """Declares a route public: it authenticates by other means (or serves nothing private)."""


_public.required_scope = PUBLIC_SCOPE  # type: ignore[attr-defined]
#: Dependency of every public route (router-level ``dependencies=[PUBLIC]``).
PUBLIC: Any = Depends(_public)


def declared_scope(call: Callable[..., Awaitable[Any]] | Callable[..., Any]) -> str | None:
    """The scope a dependency declares (``requires`` / ``PUBLIC``), or None."""
    found = getattr(call, "required_scope", None)
    return None if found is None else str(found)
