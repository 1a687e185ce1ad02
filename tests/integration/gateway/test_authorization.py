"""The authorization matrix, generated from the app's route table.

Every route declares a scope (``serve_apps.gateway.auth.requires``) or is public; every non-public
route has a row in :data:`REQUESTS` below. Each is called with no key, a garbage key, a revoked key, an
expired key, a key of the right tenant with another scope, the operator key, a key of another tenant
with the right scope, and a key of its own tenant with exactly that scope:

* no / garbage / revoked / expired key → 401;
* wrong scope, or the operator on a tenant route (or a tenant key on an operator route) → 403;
* another tenant's key → 404 for anything naming tenant A's brand, conversation or key (never a 403
  that would confirm it exists), and only its own rows from the collections;
* the right key → through to the backend (2xx, or the backend double's ``reached_backend``).

A new route without a declared scope, or without a row here, fails this test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from fastapi import routing
from pydantic import SecretStr
from sqlalchemy import update

from common.access.agents import AgentAccountIn, AgentAccounts, SignInIn
from common.access.connections import Connections, WhatsAppConnectionIn
from common.access.management import BrandIn, KeyIn, Management, TenantIn
from common.access.principal import PLATFORM_SCOPES, ROLE_SCOPES, Principal, Role, Scope, operator_principal
from common.config import Settings
from common.crypto import generate_key
from common.db import repositories as repo
from common.db.models import ApiKey
from common.db.session import make_engine, make_sessionmaker
from common.domain import Channel, InboundMessage, MediaRef
from common.errors import Conflict
from serve_apps.gateway.app import build_gateway_api
from serve_apps.gateway.auth import PUBLIC_SCOPE, declared_scope
from serve_apps.simulator.server import SimulatorServer
from tests.auth import key_token

pytestmark = pytest.mark.integration

OPERATOR_KEY = "operator-" + "k" * 40
#: What a signed-in supervisor may do (its brand limit aside).
SUPERVISOR = Principal(actor="supervisor", scopes=ROLE_SCOPES[Role.SUPERVISOR], tenant_id=uuid.uuid4())
METRICS_TOKEN = "metrics-" + "m" * 40


class Reached(Conflict):
    """What the backend double raises: the request got past authentication and tenancy."""

    code = "reached_backend"


class _Backend:
    """Real Postgres and Redis; the orchestrator and knowledge index only record that they were reached."""

    def __init__(self, settings: Settings, sessionmaker: Any, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.redis = redis
        self.orchestrator = self
        self.knowledge = self
        self.intake = self

    def __getattr__(self, name: str) -> Any:
        async def reached(*_: Any, **__: Any) -> Any:
            raise Reached(f"{name} reached")

        return reached

    async def ready(self) -> dict[str, bool]:
        return {"database": True, "redis": True}

    async def forget_routes(self) -> None:
        """Connections' routes drop their cached routes after a change: nothing cached here."""


@dataclass
class World:
    client: httpx.AsyncClient
    tenant_a: uuid.UUID
    tenant_b: uuid.UUID
    brand_a: uuid.UUID
    brand_b: uuid.UUID
    conversation_a: uuid.UUID
    media_a: uuid.UUID
    victim_key_a: uuid.UUID
    connection_a: uuid.UUID
    victim_connection_a: uuid.UUID
    agent_account_a: uuid.UUID
    source_a: uuid.UUID
    rule_a: uuid.UUID
    widget_a: uuid.UUID
    victim_widget_a: uuid.UUID
    victim_rule_a: uuid.UUID
    keys: dict[str, str]  # name → token
    mint: Callable[..., Any]


@pytest.fixture(scope="module")
def graph() -> Iterator[SimulatorServer]:
    """The provider SIMULATOR as the Graph API: the template sync reaches a provider, not the internet."""
    with SimulatorServer() as sim:
        yield sim


@pytest_asyncio.fixture
async def world(
    database_url: str, redis_url: str, redis_prefix: str, graph: SimulatorServer
) -> AsyncIterator[World]:
    engine = make_engine(database_url, pool_size=3)
    sessionmaker = make_sessionmaker(engine)
    service = Management(sessionmaker)
    operator = operator_principal()
    tag = uuid.uuid4().hex[:8]
    a = await service.create_tenant(operator, TenantIn(slug=f"a-{tag}", name="Tenant A"))
    b = await service.create_tenant(operator, TenantIn(slug=f"b-{tag}", name="Tenant B"))
    brand_a = await service.create_brand(operator, a.tenant.id, BrandIn(slug="shop", name="A shop"))
    brand_b = await service.create_brand(operator, b.tenant.id, BrandIn(slug="shop", name="B shop"))
    async with sessionmaker() as session:
        conv = await repo.get_or_create_conversation(
            session, tenant_id=a.tenant.id, brand_id=brand_a.id, channel=Channel.WEBCHAT, customer_id="c1"
        )
        inbound = await repo.insert_inbound(
            session,
            conversation=conv,
            message=InboundMessage(
                brand_id=brand_a.id, channel=Channel.WEBCHAT, customer_id="c1", text="[image]"
            ),
        )
        assert inbound is not None
        media = await repo.insert_media(session, message=inbound, media=MediaRef(kind="image", ref="x"))
        await repo.store_media(
            session, media_id=media.id, data=b"\xff\xd8", mime_type="image/jpeg", sha256="0"
        )
        rule = await repo.add_automation_rule(
            session,
            tenant_id=a.tenant.id,
            brand_id=brand_a.id,
            name="vip",
            kind="escalate",
            config={"keywords": ["vip"]},
        )
        victim_rule = await repo.add_automation_rule(
            session, tenant_id=a.tenant.id, brand_id=brand_a.id, name="old", kind="escalate", config={}
        )
        widget = await repo.upsert_channel_config(
            session,
            tenant_id=a.tenant.id,
            brand_id=brand_a.id,
            channel=Channel.WEBCHAT,
            external_id=f"w-{tag}-1",
            settings={},
        )
        victim_widget = await repo.upsert_channel_config(
            session,
            tenant_id=a.tenant.id,
            brand_id=brand_a.id,
            channel=Channel.WEBCHAT,
            external_id=f"w-{tag}-2",
            settings={},
        )
        source = await repo.upsert_knowledge_source(
            session,
            tenant_id=a.tenant.id,
            brand_id=brand_a.id,
            uri="a.md",
            title="A",
            content_type="text/markdown",
            content_hash="0",
        )
        await session.commit()
    keys = {"admin_a": a.admin_key.token, "admin_b": b.admin_key.token}
    keys["revoked_a"] = await key_token(sessionmaker, a.tenant.id)
    keys["expired_a"] = await key_token(sessionmaker, a.tenant.id)
    victim = await service.create_key(
        operator, a.tenant.id, KeyIn(name="victim", scopes=[Scope.MESSAGES_WRITE])
    )
    async with sessionmaker() as session:
        for name, when in (("revoked_a", "revoked_at"), ("expired_a", "expires_at")):
            prefix = keys[name].split("_")[1]
            past = datetime.now(UTC) - timedelta(minutes=1)
            await session.execute(update(ApiKey).where(ApiKey.prefix == prefix).values({when: past}))
        await session.commit()

    settings = Settings(
        api={"operator_key": OPERATOR_KEY, "metrics_token": METRICS_TOKEN, "key_cache_ttl_s": 0},
        redis={"url": redis_url, "key_prefix": f"{redis_prefix}:{tag}"},
        database={"url": database_url},
        secrets={"encryption_keys": generate_key()},
        webchat={"sse_max_s": 0.2},  # event streams end at once here: the matrix only needs their status
        channels={"meta_graph_url": graph.url},
    )
    # A supervisor of tenant A limited to another of A's brands: the "agent of another brand" column.
    brand_a2 = await service.create_brand(operator, a.tenant.id, BrandIn(slug="outlet", name="A outlet"))
    accounts = AgentAccounts(sessionmaker)
    supervisor = await accounts.create(
        operator,
        a.tenant.id,
        AgentAccountIn(
            email=f"sup-{tag}@a.test",
            display_name="Sup",
            role=Role.SUPERVISOR,
            brand_ids=[brand_a2.id],
            password=SecretStr("correct horse battery"),
        ),
    )
    signed_in = await accounts.sign_in(
        SignInIn(tenant=f"a-{tag}", email=supervisor.email, password=SecretStr("correct horse battery"))
    )
    keys["agent_other_brand"] = signed_in.token
    connections = Connections(sessionmaker, settings)
    connection_a, victim_connection_a = [
        await connections.connect(operator, a.tenant.id, brand_a.id, whatsapp_connection()) for _ in range(2)
    ]
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    app = build_gateway_api(_Backend(settings, sessionmaker, redis))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://t")

    async def mint(tenant: uuid.UUID, scope: Scope) -> str:
        return await key_token(sessionmaker, tenant, scope)

    try:
        yield World(
            client=client,
            tenant_a=a.tenant.id,
            tenant_b=b.tenant.id,
            brand_a=brand_a.id,
            brand_b=brand_b.id,
            conversation_a=conv.id,
            media_a=media.id,
            victim_key_a=victim.id,
            connection_a=connection_a.id,
            victim_connection_a=victim_connection_a.id,
            agent_account_a=supervisor.id,
            source_a=source.id,
            rule_a=rule.id,
            widget_a=widget.id,
            victim_widget_a=victim_widget.id,
            victim_rule_a=victim_rule.id,
            keys=keys,
            mint=mint,
        )
    finally:
        await client.aclose()
        await redis.aclose()
        await engine.dispose()


@dataclass(frozen=True)
class Call:
    """How to call one route with tenant A's resources; ``collection``: lists/creates in the caller's
    tenant (another tenant's key gets its own rows, not a 404)."""

    path: str
    body: Callable[[World], Any] | None = None
    collection: bool = False
    #: A multipart upload instead of a JSON body: ``{field: (name, bytes, type)}``.
    files: dict[str, tuple[str, bytes, str]] | None = None
    consumes: bool = False  # the first allowed call removes the target: a second one is 404


def whatsapp_body() -> dict[str, str]:
    """A WhatsApp connection body with a fresh number (each call connects another account)."""
    return {
        "channel": "whatsapp",
        "phone_number_id": f"PN-{uuid.uuid4().hex[:12]}",
        "business_account_id": "WABA-1",
        "app_id": "APP-1",
        "access_token": "t",
        "app_secret": "s",
        "verify_token": "verify-token",
    }


def whatsapp_connection() -> WhatsAppConnectionIn:
    """:func:`whatsapp_body` as the service takes it."""
    return WhatsAppConnectionIn.model_validate(whatsapp_body())


def _slug() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


#: One row per non-public route. Paths are formatted with the World's fields.
REQUESTS: dict[tuple[str, str], Call] = {
    ("GET", "/metrics"): Call("/metrics"),
    ("POST", "/v1/tenants"): Call("/v1/tenants", lambda w: {"slug": _slug(), "name": "New"}),
    ("GET", "/v1/tenants"): Call("/v1/tenants"),
    ("GET", "/v1/tenants/{tenant_id}"): Call("/v1/tenants/{tenant_a}"),
    ("POST", "/v1/tenants/{tenant_id}/keys"): Call(
        "/v1/tenants/{tenant_a}/keys", lambda w: {"name": "k", "scopes": ["admin"]}
    ),
    ("POST", "/v1/brands"): Call("/v1/brands", lambda w: {"slug": _slug(), "name": "B"}, collection=True),
    ("GET", "/v1/brands"): Call("/v1/brands", collection=True),
    ("GET", "/v1/brands/{brand_id}"): Call("/v1/brands/{brand_a}"),
    ("PATCH", "/v1/brands/{brand_id}"): Call("/v1/brands/{brand_a}", lambda w: {"name": "A shop"}),
    ("GET", "/v1/brands/{brand_id}/personas"): Call("/v1/brands/{brand_a}/personas"),
    ("GET", "/v1/brands/{brand_id}/personas/diff"): Call("/v1/brands/{brand_a}/personas/diff?from=1&to=1"),
    ("GET", "/v1/brands/{brand_id}/personas/{version}"): Call("/v1/brands/{brand_a}/personas/1"),
    ("POST", "/v1/brands/{brand_id}/personas/{version}/rollback"): Call(
        "/v1/brands/{brand_a}/personas/1/rollback"
    ),
    ("GET", "/v1/brands/{brand_id}/rules"): Call("/v1/brands/{brand_a}/rules"),
    ("POST", "/v1/brands/{brand_id}/rules"): Call(
        "/v1/brands/{brand_a}/rules",
        lambda w: {"name": "r", "kind": "escalate", "config": {"keywords": ["x"]}},
    ),
    ("PATCH", "/v1/brands/{brand_id}/rules/{rule_id}"): Call(
        "/v1/brands/{brand_a}/rules/{rule_a}", lambda w: {"priority": 5}
    ),
    ("DELETE", "/v1/brands/{brand_id}/rules/{rule_id}"): Call(
        "/v1/brands/{brand_a}/rules/{victim_rule_a}", consumes=True
    ),
    ("POST", "/v1/brands/{brand_id}/widgets"): Call("/v1/brands/{brand_a}/widgets", lambda w: {"title": "W"}),
    ("GET", "/v1/brands/{brand_id}/widgets"): Call("/v1/brands/{brand_a}/widgets"),
    ("GET", "/v1/widgets/{widget_id}"): Call("/v1/widgets/{widget_a}"),
    ("PUT", "/v1/widgets/{widget_id}"): Call("/v1/widgets/{widget_a}", lambda w: {"title": "W2"}),
    ("DELETE", "/v1/widgets/{widget_id}"): Call("/v1/widgets/{victim_widget_a}", consumes=True),
    ("POST", "/v1/brands/{brand_id}/channels"): Call(
        "/v1/brands/{brand_a}/channels",
        lambda w: whatsapp_body(),
    ),
    ("GET", "/v1/brands/{brand_id}/channels"): Call("/v1/brands/{brand_a}/channels"),
    ("GET", "/v1/channels/{connection_id}"): Call("/v1/channels/{connection_a}"),
    ("PATCH", "/v1/channels/{connection_id}"): Call(
        "/v1/channels/{connection_a}", lambda w: {"enabled": True}
    ),
    ("DELETE", "/v1/channels/{connection_id}"): Call("/v1/channels/{victim_connection_a}", consumes=True),
    ("POST", "/v1/channels/{connection_id}/templates/sync"): Call(
        "/v1/channels/{connection_a}/templates/sync"
    ),
    ("POST", "/v1/agent-accounts"): Call(
        "/v1/agent-accounts",
        lambda w: {"email": f"{_slug()}@a.test", "display_name": "N", "password": "a long enough password"},
        collection=True,
    ),
    ("GET", "/v1/agent-accounts"): Call("/v1/agent-accounts", collection=True),
    ("PATCH", "/v1/agent-accounts/{agent_id}"): Call(
        "/v1/agent-accounts/{agent_account_a}", lambda w: {"display_name": "S"}
    ),
    ("GET", "/v1/agents/me"): Call("/v1/agents/me", collection=True),
    ("GET", "/v1/agents/brands/{brand_id}/events"): Call("/v1/agents/brands/{brand_a}/events"),
    ("DELETE", "/v1/agents/sessions/current"): Call("/v1/agents/sessions/current", collection=True),
    ("POST", "/v1/keys"): Call(
        "/v1/keys", lambda w: {"name": "k", "scopes": ["knowledge:read"]}, collection=True
    ),
    ("GET", "/v1/keys"): Call("/v1/keys", collection=True),
    ("DELETE", "/v1/keys/{key_id}"): Call("/v1/keys/{victim_key_a}"),
    ("GET", "/v1/audit"): Call("/v1/audit", collection=True),
    ("POST", "/v1/messages/inbound"): Call(
        "/v1/messages/inbound", lambda w: {"brand_id": str(w.brand_a), "customer_id": "c2", "text": "hi"}
    ),
    ("GET", "/v1/conversations/{conversation_id}"): Call("/v1/conversations/{conversation_a}"),
    ("GET", "/v1/media/{media_id}/content"): Call("/v1/media/{media_a}/content"),
    ("GET", "/v1/agents/media/{media_id}/content"): Call("/v1/agents/media/{media_a}/content"),
    ("POST", "/v1/brands/{brand_id}/knowledge"): Call(
        "/v1/brands/{brand_a}/knowledge",
        lambda w: {
            "documents": [{"uri": "a.md", "content": "# A\n\nText.", "content_type": "text/markdown"}]
        },
    ),
    ("POST", "/v1/brands/{brand_id}/knowledge/uploads"): Call(
        "/v1/brands/{brand_a}/knowledge/uploads", lambda w: {"urls": ["s3://bucket/docs"]}
    ),
    ("GET", "/v1/brands/{brand_id}/knowledge/jobs/{job_id}"): Call(
        "/v1/brands/{brand_a}/knowledge/jobs/" + str(uuid.uuid4())
    ),
    ("GET", "/v1/brands/{brand_id}/knowledge/sources"): Call("/v1/brands/{brand_a}/knowledge/sources"),
    ("DELETE", "/v1/brands/{brand_id}/knowledge/sources/{source_id}"): Call(
        "/v1/brands/{brand_a}/knowledge/sources/{source_a}"
    ),
    ("GET", "/v1/brands/{brand_id}/knowledge/dead-letters"): Call(
        "/v1/brands/{brand_a}/knowledge/dead-letters"
    ),
    ("GET", "/v1/agents/brands/{brand_id}/conversations"): Call("/v1/agents/brands/{brand_a}/conversations"),
    ("GET", "/v1/agents/conversations/{conversation_id}"): Call("/v1/agents/conversations/{conversation_a}"),
    ("POST", "/v1/agents/conversations/{conversation_id}/messages"): Call(
        "/v1/agents/conversations/{conversation_a}/messages", lambda w: {"text": "hello"}
    ),
    ("POST", "/v1/agents/conversations/{conversation_id}/attachments"): Call(
        "/v1/agents/conversations/{conversation_a}/attachments",
        files={"file": ("label.png", b"\x89PNG\r\n\x1a\n....", "image/png")},
    ),
    ("POST", "/v1/agents/conversations/{conversation_id}/release"): Call(
        "/v1/agents/conversations/{conversation_a}/release"
    ),
    ("POST", "/v1/agents/conversations/{conversation_id}/takeover"): Call(
        "/v1/agents/conversations/{conversation_a}/takeover"
    ),
}

#: Routes that authenticate otherwise (signatures, widget tokens) or serve nothing private. Making a
#: route public is a reviewed change: it must be listed here.
PUBLIC_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/widget.js"),
    ("GET", "/chat/{brand_id}"),
    ("GET", "/agent"),
    ("POST", "/v1/agents/sessions"),
    ("OPTIONS", "/v1/webchat/{token}/{rest:path}"),
    ("GET", "/v1/webchat/{token}/config"),
    ("POST", "/v1/webchat/{token}/messages"),
    ("GET", "/v1/webchat/{token}/history"),
    ("GET", "/v1/webchat/{token}/events"),
    ("GET", "/v1/webchat/{token}/media/{media_id}"),  # the visitor's own conversation only (widget token)
    ("GET", "/webhooks/whatsapp"),
    ("POST", "/webhooks/whatsapp"),
    ("GET", "/webhooks/instagram"),
    ("POST", "/webhooks/instagram"),
    ("POST", "/webhooks/telegram/{account}"),
    ("GET", "/webhooks/meta/{app_id}"),
    ("POST", "/webhooks/meta/{app_id}"),
}


def _scopes(dependant: Any) -> list[str]:
    found = []
    for dep in dependant.dependencies:
        scope = declared_scope(dep.call)
        if scope is not None:
            found.append(scope)
        found += _scopes(dep)
    return found


def route_table() -> dict[tuple[str, str], str]:
    """(method, path) → the one scope each API route declares; fails for none or several."""
    app = build_gateway_api(_Backend(Settings(), None, None))  # type: ignore[arg-type]
    table: dict[tuple[str, str], str] = {}
    for context in routing.iter_route_contexts(app.routes):
        if not isinstance(context.original_route, routing.APIRoute):
            continue  # /openapi.json, /docs: FastAPI's own
        scopes = _scopes(context.dependant)
        for method in context.methods or ():
            assert len(scopes) == 1, f"{method} {context.path} declares {scopes or 'no scope'}"
            table[(method, context.path)] = scopes[0]
    return table


def test_every_route_declares_a_scope_and_has_a_row_in_the_matrix() -> None:
    table = route_table()
    public = {route for route, scope in table.items() if scope == PUBLIC_SCOPE}
    assert public == PUBLIC_ROUTES, "a route became public (or stopped being): review it"
    assert set(table) - public == set(REQUESTS), "add a row to REQUESTS for every new route"


def _another_scope(scope: Scope) -> Scope:
    return Scope.CONVERSATIONS_READ if scope != Scope.CONVERSATIONS_READ else Scope.MESSAGES_WRITE


async def _call(world: World, method: str, call: Call, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    path = call.path.format(**vars(world))
    if call.files is not None:
        return await world.client.request(method, path, files=call.files, headers=headers)
    body = call.body(world) if call.body else None
    return await world.client.request(method, path, json=body, headers=headers)


def _allowed(response: httpx.Response) -> bool:
    return response.is_success or (
        response.status_code == 409 and response.json()["error"]["code"] == "reached_backend"
    )


@pytest.mark.parametrize(("method", "path"), sorted(REQUESTS))
async def test_authorization_matrix(world: World, method: str, path: str) -> None:
    call = REQUESTS[(method, path)]
    scope = Scope(route_table()[(method, path)])

    for label, token in (
        ("no key", None),
        ("garbage", "ema_0123456789ab_" + "x" * 43),
        ("not a key", "hunter2"),
        ("revoked", world.keys["revoked_a"]),
        ("expired", world.keys["expired_a"]),
    ):
        response = await _call(world, method, call, token)
        assert response.status_code == 401, (label, response.text)
        assert response.json()["error"]["code"] == "unauthorized"

    if scope in PLATFORM_SCOPES:
        tenant_admin = await _call(world, method, call, world.keys["admin_a"])
        assert tenant_admin.status_code == 403, tenant_admin.text
        operator = await _call(world, method, call, OPERATOR_KEY)
        assert operator.is_success, operator.text
        if scope == Scope.METRICS:
            assert (await _call(world, method, call, METRICS_TOKEN)).is_success
        else:  # the metrics token reads metrics and nothing else
            assert (await _call(world, method, call, METRICS_TOKEN)).status_code == 403
        return

    operator = await _call(world, method, call, OPERATOR_KEY)
    assert operator.status_code == 403, ("operator on a tenant route", operator.text)
    wrong = await _call(world, method, call, await world.mint(world.tenant_a, _another_scope(scope)))
    assert wrong.status_code == 403 and wrong.json()["error"]["details"]["required_scope"] == scope.value

    other = await _call(world, method, call, await world.mint(world.tenant_b, scope))
    if call.collection:
        assert other.is_success, other.text
        assert str(world.tenant_a) not in other.text and str(world.brand_a) not in other.text
    else:
        assert other.status_code == 404, ("another tenant's key", other.text)
        assert other.json()["error"]["code"] == "not_found"

    # A signed-in supervisor of tenant A limited to another brand: 403 beyond its role, else 404 for
    # anything of brand A (its lists hold only its own brand), like another tenant's key.
    limited = await _call(world, method, call, world.keys["agent_other_brand"])
    if not SUPERVISOR.allows(scope):
        assert limited.status_code == 403, ("agent of another brand", limited.text)
    elif call.collection:
        assert limited.is_success, limited.text
        assert str(world.brand_a) not in limited.text
    else:
        assert limited.status_code == 404, ("agent of another brand", limited.text)

    right = await _call(world, method, call, await world.mint(world.tenant_a, scope))
    if path.endswith("/jobs/{job_id}"):  # an unknown job of its own brand: the job is unknown, not the brand
        assert right.status_code == 404 and "job_id" in right.json()["error"]["details"]
    else:
        assert _allowed(right), right.text
    admin = await _call(world, method, call, world.keys["admin_a"])  # admin holds every tenant scope
    assert admin.status_code == (404 if call.consumes else right.status_code), admin.text
