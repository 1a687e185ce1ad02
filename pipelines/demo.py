"""The demo brand shipped with the repository: its tenant, persona and knowledge documents.

``make run`` seeds it so a newcomer can chat with a brand whose answers are checkable against
``pipelines/demo/*.md``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import repositories as repo
from common.domain import BrandProfile, Persona, Tenant
from common.schemas import KnowledgeDocumentIn, KnowledgeUploadIn

DEMO_PACKAGE = "pipelines"
DEMO_DIR = "demo"


@dataclass(frozen=True)
class DemoBrand:
    """Tenant and brand as declared in ``pipelines/demo/brand.yaml``."""

    tenant: Tenant
    brand: BrandProfile


def load_demo_brand() -> DemoBrand:
    """Parse ``brand.yaml``."""
    raw: dict[str, Any] = yaml.safe_load(
        resources.files(DEMO_PACKAGE).joinpath(DEMO_DIR, "brand.yaml").read_text(encoding="utf-8")
    )
    t, b = raw["tenant"], raw["brand"]
    tenant = Tenant(id=uuid.UUID(str(t["id"])), slug=t["slug"], name=t["name"])
    p = b.get("persona", {})
    persona = Persona(
        tone=p.get("tone", Persona.tone),
        languages=tuple(p.get("languages", ("en",))),
        greeting=p.get("greeting", Persona.greeting),
        sign_off=p.get("sign_off", ""),
        avoid_topics=tuple(p.get("avoid_topics", ())),
        escalation_message=p.get("escalation_message", Persona.escalation_message),
        fallback_message=p.get("fallback_message", Persona.fallback_message),
    )
    brand = BrandProfile(
        id=uuid.UUID(str(b["id"])), tenant_id=tenant.id, slug=b["slug"], name=b["name"], persona=persona
    )
    return DemoBrand(tenant=tenant, brand=brand)


def demo_documents() -> KnowledgeUploadIn:
    """Every Markdown file of the demo brand, as a knowledge upload."""
    folder = resources.files(DEMO_PACKAGE).joinpath(DEMO_DIR)
    docs = [
        KnowledgeDocumentIn(
            uri=f"demo/{entry.name}",
            content=entry.read_text(encoding="utf-8"),
            content_type="text/markdown",
            title=entry.name.removesuffix(".md").replace("-", " ").replace("_", " ").title(),
        )
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".md")
    ]
    return KnowledgeUploadIn(documents=docs)


async def seed_demo_brand(sessionmaker: async_sessionmaker[AsyncSession]) -> DemoBrand:
    """Create or update the demo tenant, brand and persona (idempotent)."""
    demo = load_demo_brand()
    async with sessionmaker() as session:
        await repo.upsert_tenant(
            session, tenant_id=demo.tenant.id, slug=demo.tenant.slug, name=demo.tenant.name
        )
        await repo.upsert_brand(
            session,
            brand_id=demo.brand.id,
            tenant_id=demo.tenant.id,
            slug=demo.brand.slug,
            name=demo.brand.name,
            persona=demo.brand.persona,
        )
        await session.commit()
    return demo
