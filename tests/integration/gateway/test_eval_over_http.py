"""``make eval-answers --base-url``: an evaluation brand is onboarded through the public API only
(operator key → tenant → brand with its persona → documents) and its questions are asked by new
customers through ``POST /v1/messages/inbound``, follow-ups after their history.

The gateway runs in process (ASGI transport) on real Postgres, Redis and embedded Qdrant with the
``ConstantEmbedder`` double: what is under test is the onboarding and the asking, not answer quality
(``make eval-answers`` measures that).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from bench import answers
from common.config import ApiSettings, ServiceEndpoints, Settings
from common.db import models
from serve_apps.gateway.app import build_gateway_api
from serve_apps.inprocess import InProcessBackend
from tests.fakes.chat import ScriptedChatModel
from tests.fakes.embedding import ConstantEmbedder

pytestmark = pytest.mark.integration

OPERATOR_KEY = "operator-" + "e" * 40


async def test_a_brand_is_onboarded_through_the_api_and_its_questions_asked_by_new_customers(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = answers.load_questions("saltmarsh-inn", "holdout")
    picked = [next(q for q in every if q.kind == k) for k in ("answerable", "followup", "unanswerable")]
    monkeypatch.setattr(answers, "load_questions", lambda brand, split: picked)
    settings = Settings(api=ApiSettings(operator_key=SecretStr(OPERATOR_KEY), key_cache_ttl_s=0))
    endpoints = ServiceEndpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=f"{redis_prefix}:ev{uuid.uuid4().hex[:6]}",
        qdrant_path=tmp_path / "q",
    )
    backend = InProcessBackend(
        settings, endpoints, embedder=ConstantEmbedder(), chat_model=ScriptedChatModel("x")
    )
    transport = httpx.ASGITransport(app=build_gateway_api(backend))
    try:
        outcomes = await answers.run_over_http(
            "http://gw", OPERATOR_KEY, ["saltmarsh-inn"], "holdout", transport=transport
        )
        assert [o.id for o in outcomes] == [q.id for q in picked]
        assert all(o.answer and o.latency_ms > 0 for o in outcomes)
        async with backend.sessionmaker() as session:
            tenant = (
                await session.scalars(
                    select(models.Tenant).where(models.Tenant.slug.like("saltmarsh-eval-%"))
                )
            ).one()
            brand = (
                await session.scalars(select(models.Brand).where(models.Brand.tenant_id == tenant.id))
            ).one()
            persona = (
                await session.scalars(
                    select(models.PersonaProfile).where(models.PersonaProfile.brand_id == brand.id)
                )
            ).one()
            uris = set(
                await session.scalars(
                    select(models.KnowledgeSource.uri).where(models.KnowledgeSource.brand_id == brand.id)
                )
            )
            conversations = list(
                await session.scalars(
                    select(models.Conversation).where(models.Conversation.brand_id == brand.id)
                )
            )
            inbound = list(
                await session.scalars(
                    select(models.MessageLog).where(
                        models.MessageLog.brand_id == brand.id, models.MessageLog.direction == "inbound"
                    )
                )
            )
        assert persona.fallback_message.startswith("I'm not sure")  # the brand.yaml persona, not the default
        assert uris == {
            f"upload://{f}" for f in ("policies.md", "rooms.md", "faq.csv", "dining-and-spa.html")
        }
        assert len(conversations) == len(picked)  # a new customer per question
        assert len(inbound) == len(picked) + len(picked[1].history)  # a follow-up's history is asked first
        # A wrong operator key ends the run with the system's answer, not a traceback.
        with pytest.raises(SystemExit, match="HTTP 401"):
            await answers.run_over_http(
                "http://gw", "wrong-" + "k" * 40, ["saltmarsh-inn"], "holdout", transport=transport
            )
    finally:
        await backend.aclose()
