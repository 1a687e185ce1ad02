"""Pick the chat model backend the settings name."""

from __future__ import annotations

from common.config import LLMProvider, LLMSettings
from common.errors import InvalidInput
from common.llm.base import ChatModel


def build_chat_model(settings: LLMSettings) -> ChatModel:
    """LOCAL → embedded llama.cpp; OPENAI and VLLM → the OpenAI-compatible HTTP client.

    vLLM (and Ray Serve LLM in front of it) exposes the OpenAI API, so it needs only ``base_url``.
    """
    if settings.provider is LLMProvider.LOCAL:
        # Imported here so HTTP-only processes never load the native llama.cpp library.
        from common.llm.llamacpp import LlamaCppChatModel

        return LlamaCppChatModel(settings)
    if not settings.base_url:
        raise InvalidInput(
            f"llm.base_url is required for the {settings.provider.value} provider "
            "(set LLM_BASE_URL or LLM__BASE_URL, e.g. http://host:8000/v1)",
            details={"setting": "llm.base_url", "provider": settings.provider.value},
        )
    from common.llm.openai_compat import OpenAICompatibleChatModel

    return OpenAICompatibleChatModel(settings)
