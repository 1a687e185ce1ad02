"""A brand's automation rules through the API: validated on write (a bad config is a 400 naming the
field, never a rule skipped later), used from the next message on, audited with before and after.

Real Postgres and Redis; ``ScriptedChatModel`` and ``ConstantEmbedder`` are test doubles (named so).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from common.config import ServiceEndpoints
from tests.integration.gateway.test_persona_versions import OPERATOR_KEY, replica

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def brand_api(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], str]]:
    """A replica, a new tenant's admin key headers and its new brand's id."""
    endpoints = ServiceEndpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=f"{redis_prefix}:ru{uuid.uuid4().hex[:6]}",
    )
    async with replica(endpoints, tmp_path / "q") as (_, client):
        made = await client.post(
            "/v1/tenants",
            json={"slug": f"ru-{uuid.uuid4().hex[:8]}", "name": "R"},
            headers={"authorization": f"Bearer {OPERATOR_KEY}"},
        )
        key = {"authorization": f"Bearer {made.json()['admin_key']['token']}"}
        brand = (await client.post("/v1/brands", json={"slug": "b", "name": "B"}, headers=key)).json()["id"]
        yield client, key, brand


async def test_rules_are_validated_on_write_and_used_by_the_next_message(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    async with brand_api(database_url, redis_url, redis_prefix, tmp_path) as (client, key, brand):
        rules = f"/v1/brands/{brand}/rules"

        async def escalation(text: str) -> list[str]:
            r = await client.post(
                "/v1/messages/inbound",
                json={"brand_id": brand, "customer_id": uuid.uuid4().hex, "text": text},
                headers=key,
            )
            return [g["rule"] for g in r.json()["guardrails"] if g["action"] == "escalate"]

        # Refused on write, with the field named: a typo'd condition, a wrong type, an unknown action.
        typo = await client.post(
            rules, json={"name": "vip", "kind": "escalate", "config": {"keyword": ["refund"]}}, headers=key
        )
        assert typo.status_code == 400 and typo.json()["error"]["details"]["errors"][0]["loc"] == [
            "config",
            "keyword",
        ]
        wrong = await client.post(
            rules,
            json={"name": "h", "kind": "escalate", "config": {"business_hours": {"start": "nine"}}},
            headers=key,
        )
        assert wrong.status_code == 400
        unknown = await client.post(
            rules,
            json={"name": "a", "kind": "actions", "config": {"allowed": ["launch_rocket"]}},
            headers=key,
        )
        assert unknown.status_code == 400 and unknown.json()["error"]["details"]["unknown"] == [
            "launch_rocket"
        ]
        assert (await client.get(rules, headers=key)).json() == []

        made_rule = await client.post(
            rules,
            json={
                "name": "chargebacks",
                "kind": "escalate",
                "config": {"keywords": ["chargeback"], "reason": "money"},
            },
            headers=key,
        )
        assert made_rule.status_code == 201, made_rule.text
        rule = made_rule.json()
        assert "escalation:automation_rule" in await escalation("I will file a chargeback")

        off = await client.patch(f"{rules}/{rule['id']}", json={"enabled": False}, headers=key)
        assert off.json()["enabled"] is False
        assert "escalation:automation_rule" not in await escalation("I will file a chargeback")
        bad_patch = await client.patch(
            f"{rules}/{rule['id']}", json={"config": {"keywords": "x", "nope": 1}}, headers=key
        )
        assert bad_patch.status_code == 400
        assert (await client.get(rules, headers=key)).json()[0]["config"] == {
            "keywords": ["chargeback"],
            "reason": "money",
        }

        gone = await client.delete(f"{rules}/{rule['id']}", headers=key)
        assert gone.status_code == 200
        assert (await client.delete(f"{rules}/{rule['id']}", headers=key)).status_code == 404
        audit = (await client.get("/v1/audit", headers=key)).json()
        update = next(e for e in audit if e["action"] == "rule.update")
        assert update["before"]["enabled"] is True and update["after"]["enabled"] is False
        assert {"rule.create", "rule.delete"} <= {e["action"] for e in audit}


async def test_offer_rules_are_validated_on_write(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    async with brand_api(database_url, redis_url, redis_prefix, tmp_path) as (client, key, brand):
        rules = f"/v1/brands/{brand}/rules"

        async def offer(config: dict[str, object]) -> dict[str, object]:
            r = await client.post(rules, json={"name": "o", "kind": "offer", "config": config}, headers=key)
            assert r.status_code in (201, 400), r.text
            return {"status": r.status_code, **r.json()}

        # A read-only action runs without asking, so a rule may not offer it; nor an unknown one.
        lookup = await offer({"keywords": ["order"], "action": "order_lookup"})
        assert lookup["status"] == 400
        assert lookup["error"]["details"]["offerable"] == ["create_ticket"]  # type: ignore[index]
        assert (await offer({"keywords": ["x"], "action": "launch_rocket"}))["status"] == 400
        # No keywords, a blank one, a placeholder other than {message}.
        assert (await offer({"keywords": [], "action": "create_ticket"}))["status"] == 400
        assert (await offer({"keywords": [" "], "action": "create_ticket"}))["status"] == 400
        odd = await offer(
            {"keywords": ["ticket"], "action": "create_ticket", "arguments": {"subject": "{customer}"}}
        )
        assert odd["status"] == 400 and odd["error"]["details"]["errors"][0]["loc"][:2] == [  # type: ignore[index]
            "config",
            "arguments",
        ]
        assert (await client.get(rules, headers=key)).json() == []

        good = await offer(
            {
                "keywords": [" ticket "],
                "action": "create_ticket",
                "arguments": {"subject": "Ticket: {message}", "description": "{message}"},
            }
        )
        assert good["status"] == 201 and good["config"] == {  # stored in its normal form
            "keywords": ["ticket"],
            "action": "create_ticket",
            "arguments": {"subject": "Ticket: {message}", "description": "{message}"},
        }


async def test_suggest_rules_are_validated_on_write(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    async with brand_api(database_url, redis_url, redis_prefix, tmp_path) as (client, key, brand):
        rules = f"/v1/brands/{brand}/rules"

        async def suggest(options: object) -> int:
            body = {"name": "s", "kind": "suggest", "config": {"options": options}}
            return (await client.post(rules, json=body, headers=key)).status_code

        assert await suggest(["Only one"]) == 400  # a choice needs two
        assert (
            await suggest(["Delivery times", "A label longer than twenty"]) == 400
        )  # a channel would cut it
        assert await suggest(["Refunds", "refunds"]) == 400
        assert await suggest([f"Option {i}" for i in range(11)]) == 400  # a WhatsApp list holds 10
        made = await client.post(
            rules,
            json={"name": "s", "kind": "suggest", "config": {"options": ["  Delivery   times ", "Refunds"]}},
            headers=key,
        )
        assert made.status_code == 201 and made.json()["config"] == {"options": ["Delivery times", "Refunds"]}
