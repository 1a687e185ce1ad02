"""The management API: tenants (operator), brands, channel connections, API keys and the audit log.

Onboarding a business: the operator ``POST /v1/tenants`` and hands the answer's ``admin_key`` (shown
once) to the business, which creates its brands and narrower keys with it. Everything here goes through
:class:`common.access.management.Management`, the same service the admin CLI uses.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request

from common.access.agents import AgentAccountIn, AgentAccountOut, AgentAccountPatch, AgentAccounts
from common.access.connections import ConnectionIn, ConnectionOut, ConnectionPatch, Connections
from common.access.management import (
    AuditOut,
    BrandIn,
    BrandOut,
    BrandPatch,
    CreatedKeyOut,
    KeyIn,
    KeyOut,
    Management,
    PersonaDiffOut,
    PersonaVersionOut,
    TenantCreatedOut,
    TenantIn,
    TenantOut,
)
from common.access.principal import Principal, Scope
from common.access.rules import RuleIn, RuleOut, RulePatch, Rules
from common.errors import NotFound
from serve_apps.gateway.auth import authenticator, requires
from serve_apps.gateway.backend import GatewayBackend
from serve_apps.webchat.manage import CreatedWidgetOut, WidgetIn, WidgetOut, Widgets


def _tenant(caller: Principal) -> uuid.UUID:
    # requires() only lets tenant scopes through for a principal with a tenant.
    assert caller.tenant_id is not None
    return caller.tenant_id


def build_management_router(backend: GatewayBackend) -> APIRouter:
    """``/v1/tenants``, ``/v1/brands``, ``/v1/keys``, ``/v1/audit``."""
    router = APIRouter(prefix="/v1", tags=["management"])

    def service() -> Management:
        return Management(backend.sessionmaker)

    def agent_accounts() -> AgentAccounts:
        return AgentAccounts(backend.sessionmaker, session_hours=backend.settings.api.agent_session_hours)

    def connections() -> Connections:
        return Connections(backend.sessionmaker, backend.settings)

    @router.post("/tenants", status_code=201, response_model=TenantCreatedOut)
    async def create_tenant(body: TenantIn, caller: Principal = requires(Scope.OPERATOR)) -> TenantCreatedOut:
        return await service().create_tenant(caller, body)

    @router.get("/tenants", response_model=list[TenantOut])
    async def list_tenants(_caller: Principal = requires(Scope.OPERATOR)) -> list[TenantOut]:
        return await service().list_tenants()

    @router.get("/tenants/{tenant_id}", response_model=TenantOut)
    async def get_tenant(tenant_id: uuid.UUID, _caller: Principal = requires(Scope.OPERATOR)) -> TenantOut:
        return await service().get_tenant(tenant_id)

    @router.post("/tenants/{tenant_id}/keys", status_code=201, response_model=CreatedKeyOut)
    async def operator_key(
        tenant_id: uuid.UUID, body: KeyIn, caller: Principal = requires(Scope.OPERATOR)
    ) -> CreatedKeyOut:
        # The way back in for a business that lost (or revoked) every admin key.
        return await service().create_key(caller, tenant_id, body)

    @router.post("/brands", status_code=201, response_model=BrandOut)
    async def create_brand(body: BrandIn, caller: Principal = requires(Scope.ADMIN)) -> BrandOut:
        return await service().create_brand(caller, _tenant(caller), body)

    @router.get("/brands", response_model=list[BrandOut])
    async def list_brands(caller: Principal = requires(Scope.BRANDS_READ)) -> list[BrandOut]:
        # An agent limited to some brands sees only those (its console offers no other).
        return [b for b in await service().list_brands(caller, _tenant(caller)) if caller.sees_brand(b.id)]

    @router.get("/brands/{brand_id}", response_model=BrandOut)
    async def get_brand(brand_id: uuid.UUID, caller: Principal = requires(Scope.BRANDS_READ)) -> BrandOut:
        return await service().get_brand(caller, _tenant(caller), brand_id)

    @router.patch("/brands/{brand_id}", response_model=BrandOut)
    async def update_brand(
        brand_id: uuid.UUID, body: BrandPatch, caller: Principal = requires(Scope.ADMIN)
    ) -> BrandOut:
        return await service().update_brand(caller, _tenant(caller), brand_id, body)

    @router.get("/brands/{brand_id}/personas", response_model=list[PersonaVersionOut])
    async def list_personas(
        brand_id: uuid.UUID, caller: Principal = requires(Scope.BRANDS_READ)
    ) -> list[PersonaVersionOut]:
        return await service().list_personas(caller, _tenant(caller), brand_id)

    # Before /personas/{version}: "diff" is not a version number.
    @router.get("/brands/{brand_id}/personas/diff", response_model=PersonaDiffOut)
    async def diff_personas(
        brand_id: uuid.UUID,
        from_version: Annotated[int, Query(alias="from", ge=1)],
        to_version: Annotated[int, Query(alias="to", ge=1)],
        caller: Principal = requires(Scope.BRANDS_READ),
    ) -> PersonaDiffOut:
        return await service().diff_personas(caller, _tenant(caller), brand_id, from_version, to_version)

    @router.get("/brands/{brand_id}/personas/{version}", response_model=PersonaVersionOut)
    async def get_persona(
        brand_id: uuid.UUID,
        version: Annotated[int, Path(ge=1)],
        caller: Principal = requires(Scope.BRANDS_READ),
    ) -> PersonaVersionOut:
        return await service().get_persona(caller, _tenant(caller), brand_id, version)

    @router.post("/brands/{brand_id}/personas/{version}/rollback", response_model=BrandOut)
    async def rollback_persona(
        brand_id: uuid.UUID, version: Annotated[int, Path(ge=1)], caller: Principal = requires(Scope.ADMIN)
    ) -> BrandOut:
        # A new version equal to `version`: the next message of every replica drafts with it.
        return await service().rollback_persona(caller, _tenant(caller), brand_id, version)

    @router.get("/brands/{brand_id}/rules", response_model=list[RuleOut])
    async def list_rules(
        brand_id: uuid.UUID, caller: Principal = requires(Scope.BRANDS_READ)
    ) -> list[RuleOut]:
        return await Rules(backend.sessionmaker).list_rules(_tenant(caller), brand_id)

    @router.post("/brands/{brand_id}/rules", status_code=201, response_model=RuleOut)
    async def add_rule(
        brand_id: uuid.UUID, body: RuleIn, caller: Principal = requires(Scope.ADMIN)
    ) -> RuleOut:
        # Validated against its kind here: a rule that would be skipped at read time is refused now.
        return await Rules(backend.sessionmaker).add(caller, _tenant(caller), brand_id, body)

    @router.patch("/brands/{brand_id}/rules/{rule_id}", response_model=RuleOut)
    async def update_rule(
        brand_id: uuid.UUID, rule_id: uuid.UUID, body: RulePatch, caller: Principal = requires(Scope.ADMIN)
    ) -> RuleOut:
        return await Rules(backend.sessionmaker).update(caller, _tenant(caller), brand_id, rule_id, body)

    @router.delete("/brands/{brand_id}/rules/{rule_id}", response_model=RuleOut)
    async def delete_rule(
        brand_id: uuid.UUID, rule_id: uuid.UUID, caller: Principal = requires(Scope.ADMIN)
    ) -> RuleOut:
        return await Rules(backend.sessionmaker).delete(caller, _tenant(caller), brand_id, rule_id)

    def widgets() -> Widgets:
        return Widgets(backend.sessionmaker, backend.settings)

    @router.post("/brands/{brand_id}/widgets", status_code=201, response_model=CreatedWidgetOut)
    async def create_widget(
        brand_id: uuid.UUID, body: WidgetIn, caller: Principal = requires(Scope.ADMIN)
    ) -> CreatedWidgetOut:
        out = await widgets().create(caller, _tenant(caller), brand_id, body)
        await backend.intake.forget_routes()
        return out

    @router.get("/brands/{brand_id}/widgets", response_model=list[WidgetOut])
    async def list_widgets(
        brand_id: uuid.UUID, caller: Principal = requires(Scope.BRANDS_READ)
    ) -> list[WidgetOut]:
        return await widgets().list_widgets(_tenant(caller), brand_id)

    @router.get("/widgets/{widget_id}", response_model=WidgetOut)
    async def get_widget(widget_id: uuid.UUID, caller: Principal = requires(Scope.BRANDS_READ)) -> WidgetOut:
        found = await widgets().get(_tenant(caller), widget_id)
        if not caller.sees_brand(found.brand_id):
            raise NotFound("unknown widget", details={"widget_id": str(widget_id)})
        return found

    @router.put("/widgets/{widget_id}", response_model=WidgetOut)
    async def update_widget(
        widget_id: uuid.UUID, body: WidgetIn, caller: Principal = requires(Scope.ADMIN)
    ) -> WidgetOut:
        out = await widgets().update(caller, _tenant(caller), widget_id, body)
        await backend.intake.forget_routes()
        return out

    @router.delete("/widgets/{widget_id}", response_model=WidgetOut)
    async def delete_widget(widget_id: uuid.UUID, caller: Principal = requires(Scope.ADMIN)) -> WidgetOut:
        out = await widgets().delete(caller, _tenant(caller), widget_id)
        await backend.intake.forget_routes()
        return out

    @router.post("/brands/{brand_id}/channels", status_code=201, response_model=ConnectionOut)
    async def connect_channel(
        brand_id: uuid.UUID,
        body: Annotated[ConnectionIn, Body()],
        caller: Principal = requires(Scope.ADMIN),
    ) -> ConnectionOut:
        # Credentials are write-only: the answer names the ones set and the webhook URL to give the provider.
        out = await connections().connect(caller, _tenant(caller), brand_id, body)
        await backend.intake.forget_routes()
        return out

    @router.get("/brands/{brand_id}/channels", response_model=list[ConnectionOut])
    async def list_channels(
        brand_id: uuid.UUID, caller: Principal = requires(Scope.BRANDS_READ)
    ) -> list[ConnectionOut]:
        return await connections().list(caller, _tenant(caller), brand_id)

    @router.get("/channels/{connection_id}", response_model=ConnectionOut)
    async def get_channel(
        connection_id: uuid.UUID, caller: Principal = requires(Scope.BRANDS_READ)
    ) -> ConnectionOut:
        found = await connections().get(caller, _tenant(caller), connection_id)
        if not caller.sees_brand(found.brand_id):  # as unknown as another tenant's
            raise NotFound("unknown channel connection", details={"connection_id": str(connection_id)})
        return found

    @router.patch("/channels/{connection_id}", response_model=ConnectionOut)
    async def update_channel(
        connection_id: uuid.UUID, body: ConnectionPatch, caller: Principal = requires(Scope.ADMIN)
    ) -> ConnectionOut:
        out = await connections().update(caller, _tenant(caller), connection_id, body)
        await backend.intake.forget_routes()
        return out

    @router.post("/channels/{connection_id}/templates/sync", response_model=ConnectionOut)
    async def sync_templates(
        connection_id: uuid.UUID, caller: Principal = requires(Scope.ADMIN)
    ) -> ConnectionOut:
        # WhatsApp's template list, kept with the connection: the window template is checked against it.
        out = await connections().sync_templates(caller, _tenant(caller), connection_id)
        await backend.intake.forget_routes()
        return out

    @router.delete("/channels/{connection_id}", response_model=ConnectionOut)
    async def delete_channel(
        connection_id: uuid.UUID, caller: Principal = requires(Scope.ADMIN)
    ) -> ConnectionOut:
        out = await connections().delete(caller, _tenant(caller), connection_id)
        await backend.intake.forget_routes()
        return out

    @router.post("/agent-accounts", status_code=201, response_model=AgentAccountOut)
    async def create_agent(
        body: AgentAccountIn, caller: Principal = requires(Scope.ADMIN)
    ) -> AgentAccountOut:
        return await agent_accounts().create(caller, _tenant(caller), body)

    @router.get("/agent-accounts", response_model=list[AgentAccountOut])
    async def list_agents(caller: Principal = requires(Scope.ADMIN)) -> list[AgentAccountOut]:
        return await agent_accounts().list_accounts(caller, _tenant(caller))

    @router.patch("/agent-accounts/{agent_id}", response_model=AgentAccountOut)
    async def update_agent(
        agent_id: uuid.UUID,
        body: AgentAccountPatch,
        request: Request,
        caller: Principal = requires(Scope.ADMIN),
    ) -> AgentAccountOut:
        out, signed_out = await agent_accounts().update(caller, _tenant(caller), agent_id, body)
        for prefix in signed_out:  # disabled or new password: its sessions end here at once
            authenticator(request).forget(prefix)
        return out

    @router.post("/keys", status_code=201, response_model=CreatedKeyOut)
    async def create_key(body: KeyIn, caller: Principal = requires(Scope.ADMIN)) -> CreatedKeyOut:
        return await service().create_key(caller, _tenant(caller), body)

    @router.get("/keys", response_model=list[KeyOut])
    async def list_keys(caller: Principal = requires(Scope.ADMIN)) -> list[KeyOut]:
        return await service().list_keys(caller, _tenant(caller))

    @router.delete("/keys/{key_id}", response_model=KeyOut)
    async def revoke_key(
        key_id: uuid.UUID, request: Request, caller: Principal = requires(Scope.ADMIN)
    ) -> KeyOut:
        revoked = await service().revoke_key(caller, _tenant(caller), key_id)
        authenticator(request).forget(revoked.prefix)  # other replicas follow within API__KEY_CACHE_TTL_S
        return revoked

    @router.get("/audit", response_model=list[AuditOut])
    async def audit(
        caller: Principal = requires(Scope.ADMIN),
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        before: datetime | None = None,
    ) -> list[AuditOut]:
        return await service().list_audit(caller, _tenant(caller), limit=limit, before=before)

    return router
