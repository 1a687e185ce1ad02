"""Where the orchestrator sends generation: the llm deployment hosts the local model; an
OpenAI-compatible endpoint is called directly (one Serve hop fewer) unless asked otherwise."""

from __future__ import annotations

import asyncio

from common.config import LLMProvider, LLMSettings
from common.llm.openai_compat import OpenAICompatibleChatModel
from deployments.orchestrator import direct_chat_model


def test_the_local_model_stays_behind_the_deployment() -> None:
    assert direct_chat_model(LLMSettings(provider=LLMProvider.LOCAL)) is None


def test_http_endpoints_are_called_from_the_orchestrator() -> None:
    for provider in (LLMProvider.OPENAI, LLMProvider.VLLM):
        model = direct_chat_model(LLMSettings(provider=provider, base_url="http://127.0.0.1:9/v1"))
        assert isinstance(model, OpenAICompatibleChatModel)
        asyncio.run(model.aclose())


def test_via_deployment_keeps_the_hop() -> None:
    llm = LLMSettings(provider=LLMProvider.OPENAI, base_url="http://127.0.0.1:9/v1", via_deployment=True)
    assert direct_chat_model(llm) is None
