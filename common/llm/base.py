"""The one interface every chat model backend implements, plus the usage meter they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from common.schemas import ChatRequest, ChatResponse


@runtime_checkable
class ChatModel(Protocol):
    """A chat model: messages in, one completion with usage and latency out."""

    name: str

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """Complete ``request``; raise :class:`common.errors.LLMError` (or a subclass) on failure."""
        ...

    async def aclose(self) -> None:
        """Release the model or the HTTP client; the instance is unusable afterwards."""
        ...


@dataclass
class UsageMeter:
    """Running totals of what one model instance has served (read by metrics and benchmarks)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0

    def record(self, response: ChatResponse) -> None:
        """Add one completed request."""
        self.requests += 1
        self.prompt_tokens += response.prompt_tokens
        self.completion_tokens += response.completion_tokens
        self.latency_ms += response.latency_ms
