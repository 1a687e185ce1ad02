"""Versioned personas through the API: every change is a version, list / diff / rollback, replies record
the version they were drafted with, and a change reaches another replica on its next message.

Two in-process gateways over one Postgres stand for two replicas. The brand has no knowledge, so every
question is declined with the persona's ``fallback_message``: the reply text shows which persona was
used. ``ScriptedChatModel`` and ``ConstantEmbedder`` are test doubles (named so).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from common.config import ApiSettings, ServiceEndpoints, Settings
from common.db.models import MessageLog
from serve_apps.gateway.app import build_gateway_api
from serve_apps.inprocess import InProcessBackend
from tests.fakes.chat import ScriptedChatModel
from tests.fakes.embedding import ConstantEmbedder

pytestmark = pytest.mark.integration

OPERATOR_KEY = "operator-" + "p" * 40


@contextlib.asynccontextmanager
async def replica(
    endpoints: ServiceEndpoints, qdrant: Path
) -> AsyncIterator[tuple[InProcessBackend, httpx.AsyncClient]]:
    settings = Settings(api=ApiSettings(operator_key=SecretStr(OPERATOR_KEY), key_cache_ttl_s=0))
    backend = InProcessBackend(
        settings,
        endpoints.model_copy(update={"qdrant_path": qdrant}),
        embedder=ConstantEmbedder(),
        chat_model=ScriptedChatModel("scripted answer"),
    )
    app = build_gateway_api(backend)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            yield backend, client
    finally:
        await backend.aclose()


async def test_persona_versions_diff_rollback_and_replies_record_their_version(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    endpoints = ServiceEndpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=f"{redis_prefix}:pv{uuid.uuid4().hex[:6]}",
    )
    async with (
        replica(endpoints, tmp_path / "q1") as (one, client1),
        replica(endpoints, tmp_path / "q2") as (_, client2),
    ):
        operator = {"authorization": f"Bearer {OPERATOR_KEY}"}
        created = await client1.post(
            "/v1/tenants", json={"slug": f"pv-{uuid.uuid4().hex[:8]}", "name": "P"}, headers=operator
        )
        key = {"authorization": f"Bearer {created.json()['admin_key']['token']}"}
        brand = await client1.post(
            "/v1/brands",
            json={
                "slug": "b",
                "name": "B",
                "persona": {"tone": "calm", "fallback_message": "Sorry from v1."},
            },
            headers=key,
        )
        assert brand.status_code == 201 and brand.json()["persona_version"] == 1
        brand_id = brand.json()["id"]

        async def ask(client: httpx.AsyncClient, text: str) -> tuple[str, int | None]:
            # A new customer each time: two declines in a row would hand a conversation to a person.
            r = await client.post(
                "/v1/messages/inbound",
                json={"brand_id": brand_id, "customer_id": uuid.uuid4().hex, "text": text},
                headers=key,
            )
            assert r.status_code == 200, r.text
            async with one.sessionmaker() as s:
                version = await s.scalar(
                    select(MessageLog.persona_version).where(
                        MessageLog.id == uuid.UUID(r.json()["message_id"])
                    )
                )
            return r.json()["text"], version

        text, version = await ask(client2, "What is the warranty on the moon lander?")
        assert "Sorry from v1." in text and version == 1

        # A change on replica 1 is what replica 2 drafts with on its very next message.
        v2 = await client1.patch(
            f"/v1/brands/{brand_id}",
            json={"persona": {"tone": "cheerful", "fallback_message": "Oops, v2 here."}},
            headers=key,
        )
        assert v2.json()["persona_version"] == 2
        text, version = await ask(client2, "What is the warranty on the moon lander?")
        assert "Oops, v2 here." in text and version == 2

        # The same persona again is no new version; a name change alone is none either.
        same = await client1.patch(
            f"/v1/brands/{brand_id}",
            json={"name": "B2", "persona": {"tone": "cheerful", "fallback_message": "Oops, v2 here."}},
            headers=key,
        )
        assert same.json()["persona_version"] == 2

        listed = (await client1.get(f"/v1/brands/{brand_id}/personas", headers=key)).json()
        assert [(v["version"], v["current"]) for v in listed] == [(2, True), (1, False)]
        assert listed[1]["persona"]["tone"] == "calm" and listed[0]["created_by"].startswith("key:")
        diff = (await client1.get(f"/v1/brands/{brand_id}/personas/diff?from=1&to=2", headers=key)).json()
        assert diff["changes"] == {
            "fallback_message": {"before": "Sorry from v1.", "after": "Oops, v2 here."},
            "tone": {"before": "calm", "after": "cheerful"},
        }

        rolled = await client1.post(f"/v1/brands/{brand_id}/personas/1/rollback", headers=key)
        assert rolled.status_code == 200 and rolled.json()["persona_version"] == 3
        assert rolled.json()["persona"]["fallback_message"] == "Sorry from v1."
        text, version = await ask(client2, "What is the warranty on the moon lander?")
        assert "Sorry from v1." in text and version == 3
        one_three = (
            await client1.get(f"/v1/brands/{brand_id}/personas/diff?from=1&to=3", headers=key)
        ).json()
        assert one_three["changes"] == {}

        audit = (await client1.get("/v1/audit", headers=key)).json()
        rollback = next(e for e in audit if e["action"] == "brand.persona_rollback")
        assert (
            rollback["before"]["persona"]["tone"] == "cheerful" and rollback["after"]["rolled_back_to"] == 1
        )

        # Unknown versions are 404; a version below 1 is a 422 from validation, with a machine-readable body.
        assert (await client1.get(f"/v1/brands/{brand_id}/personas/9", headers=key)).status_code == 404
        assert (
            await client1.post(f"/v1/brands/{brand_id}/personas/9/rollback", headers=key)
        ).status_code == 404
        bad = await client1.get(f"/v1/brands/{brand_id}/personas/0", headers=key)
        assert bad.status_code in (400, 422) and "error" in bad.json()
