"""Web chat widgets through the API: the platform makes the token, the identity key is shown once and
signs identities the widget accepts, allowed origins guard the API (CORS) and the chat page
(``frame-ancestors``), and disabling or deleting a widget stops its token.

Real Postgres and Redis; ``ScriptedChatModel`` and ``ConstantEmbedder`` are test doubles (named so).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from common.config import ApiSettings, ChannelSecrets, ServiceEndpoints, Settings
from serve_apps.gateway.app import build_gateway_api
from serve_apps.inprocess import InProcessBackend
from serve_apps.webchat.identity import sign_identity
from tests.fakes.chat import ScriptedChatModel
from tests.fakes.embedding import ConstantEmbedder

pytestmark = pytest.mark.integration

OPERATOR_KEY = "operator-" + "w" * 40
SITE = "https://shop.example.com"


async def test_widgets_are_made_guarded_and_removed_through_the_api(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    import httpx

    settings = Settings(
        api=ApiSettings(operator_key=SecretStr(OPERATOR_KEY), key_cache_ttl_s=0),
        channels=ChannelSecrets(
            webchat_identity_secret=SecretStr("master-secret"), public_url="https://gw.test", route_cache_s=0
        ),
    )
    endpoints = ServiceEndpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=f"{redis_prefix}:wg{uuid.uuid4().hex[:6]}",
        qdrant_path=tmp_path / "q",
    )
    backend = InProcessBackend(
        settings, endpoints, embedder=ConstantEmbedder(), chat_model=ScriptedChatModel("x")
    )
    app = build_gateway_api(backend)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            keys = []
            for name in ("a", "b"):
                made = await client.post(
                    "/v1/tenants",
                    json={"slug": f"wg{name}-{uuid.uuid4().hex[:8]}", "name": name},
                    headers={"authorization": f"Bearer {OPERATOR_KEY}"},
                )
                keys.append({"authorization": f"Bearer {made.json()['admin_key']['token']}"})
            a, b = keys
            brand = (await client.post("/v1/brands", json={"slug": "s", "name": "Shop"}, headers=a)).json()[
                "id"
            ]

            bad = await client.post(
                f"/v1/brands/{brand}/widgets", json={"allowed_origins": ["shop.example.com/x"]}, headers=a
            )
            assert bad.status_code in (400, 422) and "error" in bad.json()
            created = await client.post(
                f"/v1/brands/{brand}/widgets",
                json={
                    "title": "Help",
                    "primary_color": "#123456",
                    "allowed_origins": [SITE],
                    "require_identity": True,
                },
                headers=a,
            )
            assert created.status_code == 201, created.text
            widget = created.json()
            token, key = widget["token"], widget["identity_key"]
            assert len(token) >= 16 and key and 'data-token="' + token in widget["embed"]
            listed = (await client.get(f"/v1/brands/{brand}/widgets", headers=a)).json()
            assert [w["id"] for w in listed] == [widget["id"]] and "identity_key" not in listed[0]
            assert (await client.get(f"/v1/widgets/{widget['id']}", headers=b)).status_code == 404

            config = await client.get(f"/v1/webchat/{token}/config", headers={"origin": SITE})
            assert config.status_code == 200 and config.json()["title"] == "Help"
            assert (
                await client.get(f"/v1/webchat/{token}/config", headers={"origin": "https://evil.test"})
            ).status_code == 401

            # The key shown once signs identities the widget accepts (require_identity: no anonymous).
            identity = sign_identity(
                bytes.fromhex(key), visitor_id="cust-1", expires_at=int(time.time()) + 600
            )
            message = {"visitor_id": "anon-visitor-0001", "text": "hello", "client_message_id": "m1"}
            anonymous = await client.post(
                f"/v1/webchat/{token}/messages", json=message, headers={"origin": SITE}
            )
            assert anonymous.status_code == 401
            signed = await client.post(
                f"/v1/webchat/{token}/messages",
                json={**message, "visitor_id": "cust-1", "identity": identity},
                headers={"origin": SITE},
            )
            assert signed.status_code in (200, 201, 202), signed.text

            page = await client.get(f"/chat/{brand}")
            assert page.headers["content-security-policy"] == f"frame-ancestors 'self' {SITE}"

            off = await client.put(
                f"/v1/widgets/{widget['id']}", json={"enabled": False, "allowed_origins": [SITE]}, headers=a
            )
            assert off.status_code == 200 and off.json()["enabled"] is False
            assert (
                await client.get(f"/v1/webchat/{token}/config", headers={"origin": SITE})
            ).status_code == 404
            assert (await client.delete(f"/v1/widgets/{widget['id']}", headers=b)).status_code == 404
            assert (await client.delete(f"/v1/widgets/{widget['id']}", headers=a)).status_code == 200
            assert (await client.get(f"/v1/widgets/{widget['id']}", headers=a)).status_code == 404
            audit = {e["action"] for e in (await client.get("/v1/audit", headers=a)).json()}
            assert {"widget.create", "widget.update", "widget.delete"} <= audit
    finally:
        await backend.aclose()
