"""Fault: the LLM hangs past its deadline or answers 500 (bench/llm_stub.py fault modes, real HTTP).

The customer must get the brand's fallback (an FAQ quote or the persona's fallback message) and, after
``escalation.failed_answers`` failed answers in a row, a handoff to a human: never silence. No request
may hang past the LLM deadline: ``llm.timeout_s`` per attempt, ``llm.max_retries`` retries with bounded
backoff, so the synchronous API answers within ``(max_retries + 1) * timeout_s`` + backoff + the
pipeline's own time, and webhook replies still reach the SIMULATOR.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.llm_stub import StubServer
from common.access.principal import Scope
from common.config import LLMProvider
from common.llm.openai_compat import OpenAICompatibleChatModel
from common.retry import RetryPolicy
from pipelines.demo import demo_documents
from serve_apps.simulator import SimulatorServer
from tests.auth import key_headers
from tests.chaos.harness import chaos_settings, chaos_stack, endpoints_for, figure

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

TIMEOUT_S = 0.5
MAX_RETRIES = 1
PIPELINE_SLACK_S = 3.0  # retrieval, FAQ fallback, guardrails and the DB writes, on a busy 2-core VM


@pytest.mark.parametrize(
    ("fault", "latency_ms", "fail_status"),
    [("hangs", 5_000.0, None), ("http-500", 10.0, 500)],
)
async def test_failing_llm_gets_fallback_then_escalation_within_the_deadline(
    fault: str,
    latency_ms: float,
    fail_status: int | None,
    chaos_db: str,
    simulator: SimulatorServer,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    with StubServer(latency_ms=latency_ms, fail_status=fail_status) as stub:
        settings = chaos_settings(simulator)
        llm = settings.llm.model_copy(
            update={
                "provider": LLMProvider.OPENAI,
                "base_url": stub.base_url,
                "model": "stub",
                "timeout_s": TIMEOUT_S,
                "max_retries": MAX_RETRIES,
            }
        )
        settings = settings.model_copy(update={"llm": llm})
        policy = RetryPolicy(attempts=MAX_RETRIES + 1)
        model = OpenAICompatibleChatModel(llm, retry_policy=policy)
        backoff_cap = sum(min(policy.max_delay_s, policy.base_delay_s * 2**i) for i in range(MAX_RETRIES))
        deadline_s = (MAX_RETRIES + 1) * TIMEOUT_S + backoff_cap + PIPELINE_SLACK_S
        endpoints = endpoints_for(chaos_db, redis_url, redis_prefix, tmp_path / "q")
        async with chaos_stack(
            settings=settings, endpoints=endpoints, sim=simulator, chat_model=model
        ) as stack:
            await stack.backend.knowledge.ingest(stack.tenant_id, stack.brand_id, demo_documents())

            # Synchronous API (web chat): one customer, failed_answers + 1 turns.
            turns = stack.settings.escalation.failed_answers + 1
            headers = await key_headers(stack.backend.sessionmaker, stack.tenant_id, Scope.MESSAGES_WRITE)
            latencies, replies = [], []
            for i in range(turns):
                started = time.perf_counter()
                resp = await stack.client.post(
                    "/v1/messages/inbound",
                    json={
                        "brand_id": str(stack.brand_id),
                        "customer_id": f"webchat-{fault}",
                        "text": "How long do I have to return an item?",
                        "message_id": f"{fault}-{i}",
                    },
                    headers=headers,
                )
                latencies.append(time.perf_counter() - started)
                assert resp.status_code == 200, resp.text
                replies.append(resp.json())

            # Webhook path: every message answered at the provider, none left in silence.
            for _ in range(5):
                ack = await stack.fire_one("Do you ship internationally?")
                assert ack.acked
            counts = await stack.wait_all_sent(timeout_s=30)

            rules = [[(g["rule"], g["action"]) for g in r["guardrails"]] for r in replies]
            escalated_at = next((i + 1 for i, r in enumerate(replies) if r["escalated"]), None)
            figure(
                f"llm-{fault}",
                timeout_s=TIMEOUT_S,
                max_retries=MAX_RETRIES,
                deadline_s=f"{deadline_s:.1f}",
                api_latency_max_s=f"{max(latencies):.2f}",
                api_latency_min_s=f"{min(latencies):.2f}",
                escalated_at_turn=escalated_at,
                webhooks=len(stack.acks),
                sends=counts.sends,
                duplicate_sends=counts.duplicate_sends,
            )
            assert not stack.dead_tasks(), stack.dead_tasks()
            assert escalated_at is not None and escalated_at <= turns - 1, rules
            # Never silence: every turn up to the handoff is answered (after it, a human owns the
            # conversation and the bot stays quiet by design: docs/ESCALATION_AND_ACTIONS.md).
            answered = replies[:escalated_at]
            assert all(r["text"].strip() for r in answered), answered
            assert all(("actions", "fallback") in r for r in rules[:escalated_at]), rules
            assert any(g["rule"].startswith("escalation") for g in answered[-1]["guardrails"]), answered[-1]
            assert max(latencies) < deadline_s, latencies
            if fault == "hangs":  # the hang really was cut at the deadline, on every generating turn
                assert min(latencies[:escalated_at]) >= (MAX_RETRIES + 1) * TIMEOUT_S * 0.95
            n = len(stack.acks)
            assert (counts.inbound, counts.replies, counts.sends) == (n, n, n), counts
            assert counts.duplicate_sends == 0
