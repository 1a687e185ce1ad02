"""The management service: tenants, brands, API keys and the audit log, under both the HTTP API
(``serve_apps/gateway/management.py``) and the admin CLI (``python -m serve_apps.admin``).

Routes check the caller's scope; this layer guarantees the rest: a tenant's principal never reaches
another tenant (its ids are simply unknown: :class:`NotFound`), every change is audited in the same
transaction that makes it, and a key's token exists only in the value returned by :meth:`create_key`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common import domain
from common.access import keys
from common.access.principal import TENANT_SCOPES, Principal, Scope
from common.db import repositories as repo
from common.db.models import ApiKey, AuditEntry
from common.errors import Conflict, InvalidInput, NotFound

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
MAX_KEY_DAYS = 3650


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _slug(value: str) -> str:
    if not SLUG.fullmatch(value):
        raise ValueError("a slug is 1-100 lowercase letters, digits and '-', starting with a letter or digit")
    return value


class TenantIn(_Model):
    """``POST /v1/tenants``."""

    slug: str
    name: str = Field(min_length=1, max_length=200)

    _check_slug = field_validator("slug")(_slug)


class TenantOut(_Model):
    """A tenant as the API shows it."""

    id: uuid.UUID
    slug: str
    name: str


class PersonaIn(_Model):
    """How a brand speaks; every field has the platform default when left out."""

    tone: str = Field(default=domain.Persona.tone, min_length=1, max_length=500)
    languages: list[str] = Field(default_factory=lambda: list(domain.Persona.languages), min_length=1)
    greeting: str = Field(default=domain.Persona.greeting, max_length=500)
    sign_off: str = Field(default=domain.Persona.sign_off, max_length=500)
    avoid_topics: list[str] = Field(default_factory=list, max_length=100)
    escalation_message: str = Field(default=domain.Persona.escalation_message, min_length=1, max_length=1000)
    fallback_message: str = Field(default=domain.Persona.fallback_message, min_length=1, max_length=1000)
    media_message: str = Field(default=domain.Persona.media_message, min_length=1, max_length=1000)

    @classmethod
    def from_domain(cls, persona: domain.Persona) -> PersonaIn:
        """The API form of a stored persona (tuples as lists)."""
        values = asdict(persona)
        return cls.model_validate({k: list(v) if isinstance(v, tuple) else v for k, v in values.items()})

    def to_domain(self) -> domain.Persona:
        """As the orchestrator uses it."""
        return domain.Persona(
            tone=self.tone,
            languages=tuple(self.languages),
            greeting=self.greeting,
            sign_off=self.sign_off,
            avoid_topics=tuple(self.avoid_topics),
            escalation_message=self.escalation_message,
            fallback_message=self.fallback_message,
            media_message=self.media_message,
        )


class BrandIn(_Model):
    """``POST /v1/brands``."""

    slug: str
    name: str = Field(min_length=1, max_length=200)
    persona: PersonaIn = Field(default_factory=PersonaIn)

    _check_slug = field_validator("slug")(_slug)


class BrandPatch(_Model):
    """``PATCH /v1/brands/{id}``: the fields to change."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    persona: PersonaIn | None = None


class BrandOut(_Model):
    """A brand with its current persona and that persona's version."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    slug: str
    name: str
    persona: dict[str, Any]
    persona_version: int


class PersonaVersionOut(_Model):
    """One version of a brand's persona."""

    version: int
    persona: dict[str, Any]
    created_by: str
    created_at: datetime
    current: bool


class PersonaChange(_Model):
    """One field that differs between two versions."""

    before: Any
    after: Any


class PersonaDiffOut(_Model):
    """``GET /v1/brands/{id}/personas/diff``: the fields that differ, keyed by field name."""

    from_version: int
    to_version: int
    changes: dict[str, PersonaChange]


class KeyIn(_Model):
    """``POST /v1/keys``."""

    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] = Field(min_length=1)
    expires_in_days: int | None = Field(default=None, ge=1, le=MAX_KEY_DAYS)

    @field_validator("scopes")
    @classmethod
    def _tenant_scopes(cls, value: list[Scope]) -> list[Scope]:
        platform = sorted(s for s in value if s not in TENANT_SCOPES)
        if platform:
            raise ValueError(f"a tenant key cannot hold {', '.join(platform)}")
        return sorted(set(value))


class KeyOut(_Model):
    """A key as lists show it: never the token or its hash."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    expires_at: datetime | None
    revoked_at: datetime | None
    created_by: str
    created_at: datetime


class CreatedKeyOut(KeyOut):
    """The answer to a key's creation: the only time its ``token`` is shown."""

    token: str


class TenantCreatedOut(_Model):
    """A new tenant with its first admin key (shown once)."""

    tenant: TenantOut
    admin_key: CreatedKeyOut


class AuditOut(_Model):
    """One audit entry."""

    id: uuid.UUID
    tenant_id: uuid.UUID | None
    actor: str
    action: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    at: datetime


def tenant_out(tenant: domain.Tenant) -> TenantOut:
    """API view of a tenant."""
    return TenantOut(id=tenant.id, slug=tenant.slug, name=tenant.name)


def brand_out(brand: domain.BrandProfile) -> BrandOut:
    """API view of a brand."""
    persona = PersonaIn.from_domain(brand.persona).model_dump()
    return BrandOut(
        id=brand.id,
        tenant_id=brand.tenant_id,
        slug=brand.slug,
        name=brand.name,
        persona=persona,
        persona_version=brand.persona_version,
    )


def key_out(row: ApiKey) -> KeyOut:
    """API view of a key."""
    return KeyOut(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        prefix=row.prefix,
        scopes=list(row.scopes),
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def audit_out(row: AuditEntry) -> AuditOut:
    """API view of an audit entry."""
    return AuditOut(
        id=row.id,
        tenant_id=row.tenant_id,
        actor=row.actor,
        action=row.action,
        target_type=row.target_type,
        target_id=row.target_id,
        before=row.before,
        after=row.after,
        at=row.at,
    )


class Management:
    """Every management operation, each one transaction; ``actor`` is the authenticated caller."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    # --- tenants (operator) -------------------------------------------------------------------------

    async def create_tenant(
        self, actor: Principal, body: TenantIn, *, tenant_id: uuid.UUID | None = None
    ) -> TenantCreatedOut:
        """A new tenant and its first ``admin`` key; 409 when the slug (or id) is taken."""
        new_id = tenant_id or uuid.uuid4()
        async with self._sessionmaker() as session:
            if await repo.get_tenant(session, tenant_id=new_id) is not None:
                raise Conflict("a tenant with this id exists", details={"tenant_id": str(new_id)})
            try:
                tenant = await repo.upsert_tenant(session, tenant_id=new_id, slug=body.slug, name=body.name)
            except IntegrityError as exc:
                raise Conflict("a tenant with this slug exists", details={"slug": body.slug}) from exc
            await audit(session, actor, tenant.id, "tenant.create", "tenant", tenant.id, after=body)
            created = await self._new_key(
                session, actor, tenant.id, KeyIn(name="first admin key", scopes=[Scope.ADMIN])
            )
            await session.commit()
        return TenantCreatedOut(tenant=tenant_out(tenant), admin_key=created)

    async def ensure_tenant(self, actor: Principal, *, tenant_id: uuid.UUID, body: TenantIn) -> TenantOut:
        """Create the tenant with this id, or bring its slug and name up to date (idempotent: the demo
        seed and ``admin tenants create --id``); audited only when something changed."""
        async with self._sessionmaker() as session:
            before = await repo.get_tenant(session, tenant_id=tenant_id)
            if before is not None and (before.slug, before.name) == (body.slug, body.name):
                return tenant_out(before)
            try:
                tenant = await repo.upsert_tenant(
                    session, tenant_id=tenant_id, slug=body.slug, name=body.name
                )
            except IntegrityError as exc:
                raise Conflict("a tenant with this slug exists", details={"slug": body.slug}) from exc
            action = "tenant.create" if before is None else "tenant.update"
            await audit(
                session,
                actor,
                tenant_id,
                action,
                "tenant",
                tenant_id,
                before=None if before is None else tenant_out(before),
                after=body,
            )
            await session.commit()
        return tenant_out(tenant)

    async def list_tenants(self) -> list[TenantOut]:
        """Every tenant (operator)."""
        async with self._sessionmaker() as session:
            return [tenant_out(t) for t in await repo.list_tenants(session)]

    async def get_tenant(self, tenant_id: uuid.UUID) -> TenantOut:
        """One tenant (operator); 404 when unknown."""
        async with self._sessionmaker() as session:
            tenant = await repo.get_tenant(session, tenant_id=tenant_id)
        if tenant is None:
            raise NotFound("unknown tenant", details={"tenant_id": str(tenant_id)})
        return tenant_out(tenant)

    # --- brands -------------------------------------------------------------------------------------

    async def create_brand(
        self, actor: Principal, tenant_id: uuid.UUID, body: BrandIn, *, brand_id: uuid.UUID | None = None
    ) -> BrandOut:
        """A new brand of the tenant; 409 when the tenant already has a brand with this slug."""
        async with self._sessionmaker() as session:
            await self._tenant(session, actor, tenant_id)
            new_id = brand_id or uuid.uuid4()
            if await repo.get_brand_profile(session, brand_id=new_id) is not None:
                raise Conflict("a brand with this id exists", details={"brand_id": str(new_id)})
            brand = await self._put_brand(
                session, actor, tenant_id, new_id, body.slug, body.name, body.persona
            )
            await audit(session, actor, tenant_id, "brand.create", "brand", new_id, after=brand_out(brand))
            await session.commit()
        return brand_out(brand)

    async def ensure_brand(
        self, actor: Principal, tenant_id: uuid.UUID, *, brand_id: uuid.UUID, body: BrandIn
    ) -> BrandOut:
        """Create the brand with this id or bring it up to date (idempotent, as :meth:`ensure_tenant`)."""
        async with self._sessionmaker() as session:
            await self._tenant(session, actor, tenant_id)
            before = await repo.get_brand_profile(session, brand_id=brand_id)
            if before is not None and before.tenant_id != tenant_id:
                raise repo.unknown_brand(brand_id)
            brand = await self._put_brand(
                session, actor, tenant_id, brand_id, body.slug, body.name, body.persona
            )
            if before != brand:
                action = "brand.create" if before is None else "brand.update"
                old = None if before is None else brand_out(before)
                await audit(
                    session, actor, tenant_id, action, "brand", brand_id, before=old, after=brand_out(brand)
                )
            await session.commit()
        return brand_out(brand)

    async def list_brands(self, actor: Principal, tenant_id: uuid.UUID) -> list[BrandOut]:
        """The tenant's brands."""
        async with self._sessionmaker() as session:
            await self._tenant(session, actor, tenant_id)
            return [brand_out(b) for b in await repo.list_brands(session, tenant_id=tenant_id)]

    async def get_brand(self, actor: Principal, tenant_id: uuid.UUID, brand_id: uuid.UUID) -> BrandOut:
        """One of the tenant's brands; 404 for any other."""
        async with self._sessionmaker() as session:
            await self._tenant(session, actor, tenant_id)
            return brand_out(await repo.require_brand(session, brand_id=brand_id, tenant_id=tenant_id))

    async def update_brand(
        self, actor: Principal, tenant_id: uuid.UUID, brand_id: uuid.UUID, patch: BrandPatch
    ) -> BrandOut:
        """Change a brand's name or persona; the audit entry holds before and after."""
        async with self._sessionmaker() as session:
            await self._tenant(session, actor, tenant_id)
            before = await repo.require_brand(session, brand_id=brand_id, tenant_id=tenant_id)
            persona = patch.persona or PersonaIn.from_domain(before.persona)
            brand = await self._put_brand(
                session, actor, tenant_id, brand_id, before.slug, patch.name or before.name, persona
            )
            await audit(
                session,
                actor,
                tenant_id,
                "brand.update",
                "brand",
                brand_id,
                before=brand_out(before),
                after=brand_out(brand),
            )
            await session.commit()
        return brand_out(brand)

    # --- persona versions ---------------------------------------------------------------------------

    async def list_personas(
        self, actor: Principal, tenant_id: uuid.UUID, brand_id: uuid.UUID
    ) -> list[PersonaVersionOut]:
        """Every version of the brand's persona, newest first."""
        async with self._sessionmaker() as session:
            await self._tenant(session, actor, tenant_id)
            brand = await repo.require_brand(session, brand_id=brand_id, tenant_id=tenant_id)
            rows = await repo.list_persona_versions(session, brand_id=brand_id)
        return [_version_out(r, brand.persona_version) for r in rows]

    async def get_persona(
        self, actor: Principal, tenant_id: uuid.UUID, brand_id: uuid.UUID, version: int
    ) -> PersonaVersionOut:
        """One version of the brand's persona; 404 for a version it never had."""
        async with self._sessionmaker() as session:
            await self._tenant(session, actor, tenant_id)
            brand = await repo.require_brand(session, brand_id=brand_id, tenant_id=tenant_id)
            row = await self._version(session, brand_id, version)
        return _version_out(row, brand.persona_version)

    async def diff_personas(
        self, actor: Principal, tenant_id: uuid.UUID, brand_id: uuid.UUID, from_version: int, to_version: int
    ) -> PersonaDiffOut:
        """What changed from one version to another (field by field)."""
        async with self._sessionmaker() as session:
            await self._tenant(session, actor, tenant_id)
            await repo.require_brand(session, brand_id=brand_id, tenant_id=tenant_id)
            old = (await self._version(session, brand_id, from_version)).persona
            new = (await self._version(session, brand_id, to_version)).persona
        changes = {
            k: PersonaChange(before=old.get(k), after=new.get(k))
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)
        }
        return PersonaDiffOut(from_version=from_version, to_version=to_version, changes=changes)

    async def rollback_persona(
        self, actor: Principal, tenant_id: uuid.UUID, brand_id: uuid.UUID, version: int
    ) -> BrandOut:
        """Make an earlier version current again, as a new version (history is never rewritten)."""
        async with self._sessionmaker() as session:
            await self._tenant(session, actor, tenant_id)
            before = await repo.require_brand(session, brand_id=brand_id, tenant_id=tenant_id)
            target = await self._version(session, brand_id, version)
            persona = PersonaIn.from_domain(repo.persona_from_values(target.persona))
            brand = await self._put_brand(
                session, actor, tenant_id, brand_id, before.slug, before.name, persona
            )
            await audit(
                session,
                actor,
                tenant_id,
                "brand.persona_rollback",
                "brand",
                brand_id,
                before=brand_out(before),
                after={**brand_out(brand).model_dump(mode="json"), "rolled_back_to": version},
            )
            await session.commit()
        return brand_out(brand)

    @staticmethod
    async def _version(session: AsyncSession, brand_id: uuid.UUID, version: int) -> Any:
        row = await repo.get_persona_version(session, brand_id=brand_id, version=version)
        if row is None:
            raise NotFound("unknown persona version", details={"version": version})
        return row

    # --- keys ---------------------------------------------------------------------------------------

    async def create_key(self, actor: Principal, tenant_id: uuid.UUID, body: KeyIn) -> CreatedKeyOut:
        """A new key of the tenant; the answer holds its token, which is stored nowhere."""
        async with self._sessionmaker() as session:
            await self._tenant(session, actor, tenant_id)
            created = await self._new_key(session, actor, tenant_id, body)
            await session.commit()
        return created

    async def list_keys(self, actor: Principal, tenant_id: uuid.UUID) -> list[KeyOut]:
        """The tenant's keys, live and revoked."""
        async with self._sessionmaker() as session:
            await self._tenant(session, actor, tenant_id)
            return [key_out(k) for k in await repo.list_api_keys(session, tenant_id=tenant_id)]

    async def revoke_key(self, actor: Principal, tenant_id: uuid.UUID, key_id: uuid.UUID) -> KeyOut:
        """Revoke one of the tenant's keys (idempotent); 404 for a key of another tenant."""
        async with self._sessionmaker() as session:
            await self._tenant(session, actor, tenant_id)
            row = await repo.revoke_api_key(session, tenant_id=tenant_id, key_id=key_id)
            if row is None:
                raise NotFound("unknown key", details={"key_id": str(key_id)})
            out = key_out(row)
            await audit(
                session, actor, tenant_id, "key.revoke", "api_key", key_id, after={"prefix": out.prefix}
            )
            await session.commit()
        return out

    # --- audit --------------------------------------------------------------------------------------

    async def list_audit(
        self, actor: Principal, tenant_id: uuid.UUID, *, limit: int = 100, before: datetime | None = None
    ) -> list[AuditOut]:
        """The tenant's audit entries, newest first."""
        async with self._sessionmaker() as session:
            await self._tenant(session, actor, tenant_id)
            rows = await repo.list_audit(session, tenant_id=tenant_id, limit=limit, before=before)
        return [audit_out(r) for r in rows]

    async def record(
        self,
        actor: Principal,
        *,
        action: str,
        target_type: str,
        target_id: uuid.UUID | str,
        after: BaseModel | dict[str, Any] | None = None,
    ) -> None:
        """Audit an action done elsewhere (an agent's reply, take-over, release) in its own transaction."""
        async with self._sessionmaker() as session:
            await audit(session, actor, actor.tenant_id, action, target_type, target_id, after=after)
            await session.commit()

    # --- helpers ------------------------------------------------------------------------------------

    async def _tenant(self, session: AsyncSession, actor: Principal, tenant_id: uuid.UUID) -> None:
        # A tenant's principal only ever names its own tenant; the operator (CLI) names any existing one.
        if (actor.tenant_id is not None and actor.tenant_id != tenant_id) or await repo.get_tenant(
            session, tenant_id=tenant_id
        ) is None:
            raise NotFound("unknown tenant", details={"tenant_id": str(tenant_id)})

    async def _put_brand(
        self,
        session: AsyncSession,
        actor: Principal,
        tenant_id: uuid.UUID,
        brand_id: uuid.UUID,
        slug: str,
        name: str,
        persona: PersonaIn,
    ) -> domain.BrandProfile:
        try:
            async with session.begin_nested():
                return await repo.upsert_brand(
                    session,
                    brand_id=brand_id,
                    tenant_id=tenant_id,
                    slug=slug,
                    name=name,
                    persona=persona.to_domain(),
                    actor=actor.actor,
                )
        except IntegrityError as exc:
            raise Conflict("the tenant has a brand with this slug", details={"slug": slug}) from exc

    async def _new_key(
        self, session: AsyncSession, actor: Principal, tenant_id: uuid.UUID, body: KeyIn
    ) -> CreatedKeyOut:
        token = keys.new_token()
        expires = (
            None if body.expires_in_days is None else datetime.now(UTC) + timedelta(days=body.expires_in_days)
        )
        row = await repo.insert_api_key(
            session,
            tenant_id=tenant_id,
            name=body.name,
            prefix=token.prefix,
            token_hash=token.token_hash,
            scopes=[str(s) for s in body.scopes],
            expires_at=expires,
            created_by=actor.actor,
        )
        out = key_out(row)
        await audit(
            session,
            actor,
            tenant_id,
            "key.create",
            "api_key",
            row.id,
            after={"prefix": out.prefix, "name": out.name, "scopes": out.scopes},
        )
        return CreatedKeyOut(**out.model_dump(), token=token.token)


async def audit(
    session: AsyncSession,
    actor: Principal,
    tenant_id: uuid.UUID | None,
    action: str,
    target_type: str,
    target_id: uuid.UUID | str,
    *,
    before: BaseModel | dict[str, Any] | None = None,
    after: BaseModel | dict[str, Any] | None = None,
) -> None:
    """Add an audit entry in the caller's transaction (the change and its record commit together)."""
    await repo.insert_audit(
        session,
        tenant_id=tenant_id,
        actor=actor.actor,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        before=_plain(before),
        after=_plain(after),
    )


def _version_out(row: Any, current: int) -> PersonaVersionOut:
    return PersonaVersionOut(
        version=row.version,
        persona=dict(row.persona),
        created_by=row.created_by,
        created_at=row.created_at,
        current=row.version == current,
    )


def _plain(value: BaseModel | dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    return value.model_dump(mode="json")


def parse_scopes(values: list[str]) -> list[Scope]:
    """CLI scope names → scopes; a clear error for an unknown one."""
    known = {s.value: s for s in Scope}
    unknown = [v for v in values if v not in known]
    if unknown:
        raise InvalidInput(
            f"unknown scope {', '.join(unknown)}", details={"known": sorted(s.value for s in TENANT_SCOPES)}
        )
    return [known[v] for v in values]
