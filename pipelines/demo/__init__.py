"""Demo brand "Acme Outdoor" (tenant "acme"): ``brand.yaml``, its Markdown knowledge, and a seeder.

The fixed tenant and brand UUIDs in ``brand.yaml`` let docs, tests and curl examples name them. The
documents sit next to this file (not in a subfolder) so the ``*.md`` / ``*.yaml`` package-data globs
ship them.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from common.db.repositories.brands import persona_from_values
from common.domain import BrandProfile, Channel, Tenant
from common.schemas import KnowledgeDocumentIn, KnowledgeUploadIn

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

#: This directory.
DEMO_DIR = Path(__file__).resolve().parent
#: The tenant, brand, persona and document list.
BRAND_FILE = DEMO_DIR / "brand.yaml"
#: The brand's knowledge documents, in the order ``brand.yaml`` lists them.
DOCUMENTS = (
    DEMO_DIR / "shipping.md",
    DEMO_DIR / "returns.md",
    DEMO_DIR / "warranty.md",
    DEMO_DIR / "orders-and-payments.md",
    DEMO_DIR / "stores-and-contact.md",
)


@dataclass(frozen=True, slots=True)
class DemoBrand:
    """The demo tenant and its brand (with persona), as ``brand.yaml`` defines them."""

    tenant: Tenant
    brand: BrandProfile


def load_demo_brand(path: Path = BRAND_FILE) -> DemoBrand:
    """Parse ``brand.yaml`` into domain objects."""
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    tenant = Tenant(
        id=uuid.UUID(data["tenant"]["id"]), slug=data["tenant"]["slug"], name=data["tenant"]["name"]
    )
    brand = data["brand"]
    persona = brand["persona"]
    return DemoBrand(
        tenant=tenant,
        brand=BrandProfile(
            id=uuid.UUID(brand["id"]),
            tenant_id=tenant.id,
            slug=brand["slug"],
            name=brand["name"],
            persona=persona_from_values(persona),
        ),
    )


def demo_documents() -> KnowledgeUploadIn:
    """The demo knowledge as a ``POST /v1/brands/{brand_id}/knowledge`` body; ``uri`` is the file name."""
    return brand_documents(BRAND_FILE)


def brand_documents(path: Path) -> KnowledgeUploadIn:
    """The documents a ``brand.yaml`` lists (next to it), as an upload body.

    ``knowledge.documents`` holds file names (typed by ``knowledge.content_type``) or mappings
    ``{file: ..., content_type: ...}`` for a brand whose documents are of several types.
    """
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    knowledge = data["knowledge"]
    default_type = knowledge.get("content_type", "text/markdown")
    documents = []
    for entry in knowledge["documents"]:
        name, content_type = (
            (entry, default_type) if isinstance(entry, str) else (entry["file"], entry["content_type"])
        )
        file = path.parent / name
        documents.append(
            KnowledgeDocumentIn(
                uri=file.name,
                content=file.read_text(encoding="utf-8"),
                content_type=content_type,
                title=_title(file),
            )
        )
    return KnowledgeUploadIn(documents=documents)


#: Public web chat widget token of the demo brand (``/chat/{brand_id}`` and ``widget.js`` use it).
DEMO_WIDGET_TOKEN = "acme-outdoor-web"  # noqa: S105 - a public widget id, not a secret
#: Account ids the provider SIMULATOR uses by default (``python -m serve_apps.simulator demo``).
SIM_PHONE_NUMBER_ID = "SIM-PHONE-1"
SIM_INSTAGRAM_ID = "SIM-IG-1"
#: The SIMULATOR's approved template the demo's WhatsApp number replies with outside the window.
SIM_WINDOW_TEMPLATE = {"name": "support_followup", "language": "en_US"}


async def seed_demo_brand(sessionmaker: async_sessionmaker[AsyncSession]) -> DemoBrand:
    """Create or update the demo tenant and brand in Postgres (idempotent) and return them."""
    from common.access.connections import Connections
    from common.access.principal import operator_principal
    from common.config import get_settings

    demo = await seed_brand(sessionmaker, BRAND_FILE)
    await Connections(sessionmaker, get_settings()).ensure_default(
        operator_principal("operator:seed"),
        demo.tenant.id,
        demo.brand.id,
        Channel.WEBCHAT,
        DEMO_WIDGET_TOKEN,
        {"primary_color": "#0a7d38"},
    )
    return demo


async def seed_brand(sessionmaker: async_sessionmaker[AsyncSession], path: Path) -> DemoBrand:
    """Create or update the tenant and brand a ``brand.yaml`` describes (idempotent).

    Through the management service, as ``POST /v1/tenants`` and ``POST /v1/brands`` do: one code path,
    audited (as the operator ``seed``) only when something changed.
    """
    from common.access.management import BrandIn, Management, PersonaIn, TenantIn
    from common.access.principal import operator_principal

    demo = load_demo_brand(path)
    service = Management(sessionmaker)
    actor = operator_principal("operator:seed")
    await service.ensure_tenant(
        actor, tenant_id=demo.tenant.id, body=TenantIn(slug=demo.tenant.slug, name=demo.tenant.name)
    )
    persona = PersonaIn.from_domain(demo.brand.persona)
    await service.ensure_brand(
        actor,
        demo.tenant.id,
        brand_id=demo.brand.id,
        body=BrandIn(slug=demo.brand.slug, name=demo.brand.name, persona=persona),
    )
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    await _seed_rules(sessionmaker, demo, data.get("rules") or [])
    async with sessionmaker() as session:
        from common.db import repositories as repo

        brand = await repo.require_brand(session, brand_id=demo.brand.id)
    return DemoBrand(tenant=demo.tenant, brand=brand)


async def _seed_rules(
    sessionmaker: async_sessionmaker[AsyncSession], demo: DemoBrand, rules: list[dict[str, Any]]
) -> None:
    """The ``rules:`` of a ``brand.yaml``, kept in step by name through the rules service (validated and
    audited like ``POST /v1/brands/{id}/rules``; unchanged ones are left alone). Rules added through the
    API under other names stay."""
    from common.access.principal import operator_principal
    from common.access.rules import RuleIn, RulePatch, Rules, validate_config

    service, actor = Rules(sessionmaker), operator_principal("operator:seed")
    tenant_id, brand_id = demo.tenant.id, demo.brand.id
    existing = {r.name: r for r in await service.list_rules(tenant_id, brand_id)}
    for raw in rules:
        body = RuleIn.model_validate(raw)
        found = existing.get(body.name)
        if found is None:
            await service.add(actor, tenant_id, brand_id, body)
        elif found.kind != body.kind:
            await service.delete(actor, tenant_id, brand_id, found.id)
            await service.add(actor, tenant_id, brand_id, body)
        else:
            wanted = (validate_config(body.kind, body.config), body.enabled, body.priority)
            if (found.config, found.enabled, found.priority) != wanted:
                patch = RulePatch(config=body.config, enabled=body.enabled, priority=body.priority)
                await service.update(actor, tenant_id, brand_id, found.id, patch)


async def seed_simulated_channels(
    sessionmaker: async_sessionmaker[AsyncSession], demo: DemoBrand, *, telegram_bot_id: str
) -> None:
    """Give the demo brand the SIMULATOR's WhatsApp number, Instagram account and Telegram bot.

    These ids only exist in the local provider simulator (``make simulate``); they use the deployment's
    ``CHANNELS__*`` credentials that the launcher generated for the simulator. A real brand connects its
    own accounts with their own credentials (``POST /v1/brands/{id}/channels``).
    """
    from common.access.connections import Connections
    from common.access.principal import operator_principal
    from common.config import get_settings
    from common.delivery.window import TEMPLATE_KEY

    service = Connections(sessionmaker, get_settings())
    accounts = {
        Channel.WHATSAPP: SIM_PHONE_NUMBER_ID,
        Channel.INSTAGRAM: SIM_INSTAGRAM_ID,
        Channel.TELEGRAM: telegram_bot_id,
    }
    for channel, external_id in accounts.items():
        settings: dict[str, Any] = {"simulated": True}
        if channel is Channel.WHATSAPP:
            # Outside the 24-hour window a reply goes as this template (approved in the SIMULATOR's
            # business account, one body parameter: the reply).
            settings[TEMPLATE_KEY] = dict(SIM_WINDOW_TEMPLATE)
        await service.ensure_default(
            operator_principal("operator:seed"),
            demo.tenant.id,
            demo.brand.id,
            channel,
            external_id,
            settings,
        )


def _title(path: Path) -> str:
    """The document's first-level heading (Markdown) or ``<title>`` (HTML), else its file name."""
    text = path.read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    title = re.search(r"<title>([^<]+)</title>", text, re.IGNORECASE)
    return title.group(1).strip() if title else path.name
