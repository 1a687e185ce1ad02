"""Tenants, brands with their persona, and the brand's automation rules.

Part of :mod:`common.db.repositories` (the caller owns the transaction; see there)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from common import domain
from common.db.models import AutomationRule, Brand, PersonaProfile, PersonaVersion, Tenant
from common.db.repositories._shared import POPULATE_EXISTING
from common.errors import NotFound


async def upsert_tenant(
    session: AsyncSession, *, tenant_id: uuid.UUID, slug: str, name: str
) -> domain.Tenant:
    """Create the tenant or update its slug and name."""
    stmt = pg_insert(Tenant).values(id=tenant_id, slug=slug, name=name)
    stmt = stmt.on_conflict_do_update(index_elements=[Tenant.id], set_={"slug": slug, "name": name})
    row = (await session.scalars(stmt.returning(Tenant), execution_options=POPULATE_EXISTING)).one()
    return domain.Tenant(id=row.id, slug=row.slug, name=row.name)


async def upsert_brand(
    session: AsyncSession,
    *,
    brand_id: uuid.UUID,
    tenant_id: uuid.UUID,
    slug: str,
    name: str,
    persona: domain.Persona,
    actor: str = "system",
) -> domain.BrandProfile:
    """Create or update a brand and its persona; a changed persona becomes a new version (by ``actor``)."""
    stmt = pg_insert(Brand).values(id=brand_id, tenant_id=tenant_id, slug=slug, name=name)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Brand.id], set_={"tenant_id": tenant_id, "slug": slug, "name": name}
    )
    brand = (await session.scalars(stmt.returning(Brand), execution_options=POPULATE_EXISTING)).one()

    values = _persona_values(persona)
    # Version 0 marks a row made just now; the row lock orders concurrent changes of one brand's persona.
    await session.execute(
        pg_insert(PersonaProfile)
        .values(id=uuid.uuid4(), brand_id=brand_id, version=0, **values)
        .on_conflict_do_nothing(index_elements=[PersonaProfile.brand_id])
    )
    profile = (
        await session.scalars(
            select(PersonaProfile).where(PersonaProfile.brand_id == brand_id).with_for_update(),
            execution_options=POPULATE_EXISTING,
        )
    ).one()
    if profile.version == 0 or _persona_values(_persona_of(profile)) != values:
        for key, value in values.items():
            setattr(profile, key, value)
        profile.version += 1
        session.add(
            PersonaVersion(brand_id=brand_id, version=profile.version, persona=values, created_by=actor)
        )
        await session.flush()
    return _brand_profile(brand, profile)


async def list_persona_versions(session: AsyncSession, *, brand_id: uuid.UUID) -> Sequence[PersonaVersion]:
    """Every persona the brand has had, newest first."""
    stmt = (
        select(PersonaVersion)
        .where(PersonaVersion.brand_id == brand_id)
        .order_by(PersonaVersion.version.desc())
    )
    return (await session.scalars(stmt)).all()


async def get_persona_version(
    session: AsyncSession, *, brand_id: uuid.UUID, version: int
) -> PersonaVersion | None:
    """One version of the brand's persona, or None."""
    stmt = select(PersonaVersion).where(
        PersonaVersion.brand_id == brand_id, PersonaVersion.version == version
    )
    return (await session.scalars(stmt)).one_or_none()


def persona_from_values(values: dict[str, Any]) -> domain.Persona:
    """A stored persona (a version's JSON) as the domain object."""
    return domain.Persona(
        tone=values["tone"],
        languages=tuple(values["languages"]),
        greeting=values["greeting"],
        sign_off=values["sign_off"],
        avoid_topics=tuple(values["avoid_topics"]),
        escalation_message=values["escalation_message"],
        fallback_message=values["fallback_message"],
        # Versions stored before the field existed have the platform default.
        media_message=values.get("media_message") or domain.Persona.media_message,
    )


def unknown_brand(brand_id: uuid.UUID) -> NotFound:
    """The one 404 for a brand id that names no brand (the API's ``not_found`` with the id)."""
    return NotFound("unknown brand", details={"brand_id": str(brand_id)})


async def require_brand(
    session: AsyncSession, *, brand_id: uuid.UUID, tenant_id: uuid.UUID | None = None
) -> domain.BrandProfile:
    """The brand with its persona; :func:`unknown_brand` when there is none.

    With ``tenant_id`` (the caller's tenant), a brand of another tenant is unknown too: the same 404, so
    an answer never confirms that another tenant's brand exists.
    """
    brand = await get_brand_profile(session, brand_id=brand_id)
    if brand is None or (tenant_id is not None and brand.tenant_id != tenant_id):
        raise unknown_brand(brand_id)
    return brand


async def list_brands(session: AsyncSession, *, tenant_id: uuid.UUID) -> list[domain.BrandProfile]:
    """Every brand of a tenant with its persona, by slug."""
    stmt = (
        select(Brand, PersonaProfile)
        .outerjoin(PersonaProfile, PersonaProfile.brand_id == Brand.id)
        .where(Brand.tenant_id == tenant_id)
        .order_by(Brand.slug)
    )
    return [_brand_profile(b, p) for b, p in (await session.execute(stmt)).tuples()]


async def get_tenant(session: AsyncSession, *, tenant_id: uuid.UUID) -> domain.Tenant | None:
    """The tenant, or None."""
    row = await session.get(Tenant, tenant_id)
    return None if row is None else domain.Tenant(id=row.id, slug=row.slug, name=row.name)


async def find_tenant_by_slug(session: AsyncSession, *, slug: str) -> domain.Tenant | None:
    """The tenant with this slug, or None."""
    row = (await session.scalars(select(Tenant).where(Tenant.slug == slug))).one_or_none()
    return None if row is None else domain.Tenant(id=row.id, slug=row.slug, name=row.name)


async def list_tenants(session: AsyncSession) -> list[domain.Tenant]:
    """Every tenant, by slug."""
    rows = await session.scalars(select(Tenant).order_by(Tenant.slug))
    return [domain.Tenant(id=r.id, slug=r.slug, name=r.name) for r in rows]


async def get_brand_profile(session: AsyncSession, *, brand_id: uuid.UUID) -> domain.BrandProfile | None:
    """The brand with its persona (the default persona when none is stored), or None."""
    stmt = (
        select(Brand, PersonaProfile)
        .outerjoin(PersonaProfile, PersonaProfile.brand_id == Brand.id)
        .where(Brand.id == brand_id)
    )
    found = (await session.execute(stmt)).one_or_none()
    if found is None:
        return None
    brand, profile = found.tuple()
    return _brand_profile(brand, profile)


def _persona_values(persona: domain.Persona) -> dict[str, Any]:
    return {
        "tone": persona.tone,
        "languages": list(persona.languages),
        "greeting": persona.greeting,
        "sign_off": persona.sign_off,
        "avoid_topics": list(persona.avoid_topics),
        "escalation_message": persona.escalation_message,
        "fallback_message": persona.fallback_message,
        "media_message": persona.media_message,
    }


def _persona_of(profile: PersonaProfile) -> domain.Persona:
    return persona_from_values({key: getattr(profile, key) for key in _persona_values(domain.Persona())})


def _brand_profile(brand: Brand, profile: PersonaProfile | None) -> domain.BrandProfile:
    persona = domain.Persona() if profile is None else _persona_of(profile)
    return domain.BrandProfile(
        id=brand.id,
        tenant_id=brand.tenant_id,
        slug=brand.slug,
        name=brand.name,
        persona=persona,
        persona_version=0 if profile is None else profile.version,
    )


async def list_automation_rules(
    session: AsyncSession, *, brand_id: uuid.UUID, include_disabled: bool = False
) -> list[AutomationRule]:
    """The brand's enabled automation rules (all with ``include_disabled``), lowest ``priority`` first."""
    stmt = select(AutomationRule).where(AutomationRule.brand_id == brand_id)
    if not include_disabled:
        stmt = stmt.where(AutomationRule.enabled.is_(True))
    return list(await session.scalars(stmt.order_by(AutomationRule.priority, AutomationRule.name)))


async def add_automation_rule(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    name: str,
    kind: str,
    config: dict[str, Any],
    priority: int = 100,
    enabled: bool = True,
) -> AutomationRule:
    """Store a brand rule (``kind`` ``escalate``, ``actions`` or ``offer``; see
    ``common.conversation.escalation``)."""
    rule = AutomationRule(
        tenant_id=tenant_id,
        brand_id=brand_id,
        name=name,
        kind=kind,
        config=config,
        priority=priority,
        enabled=enabled,
    )
    session.add(rule)
    await session.flush()
    return rule
