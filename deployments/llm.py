"""Chat model deployment. Locally: embedded llama.cpp; OpenAI-compatible or vLLM by settings."""

from __future__ import annotations

from ray import serve

from common.config import ServiceEndpoints
from common.llm.base import ChatModel
from common.llm.factory import build_chat_model
from common.schemas import ChatRequest, ChatResponse
from deployments.proxy import TraceReceiving
from deployments.replica import start_replica


# A bounded queue in front of generation: callers get a fast 503 (mapped at the gateway) instead of
# waiting behind minutes of queued completions.
@serve.deployment(
    name="llm", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8, max_queued_requests=64
)
class LLMDeployment(TraceReceiving):
    """Serves chat completions to the orchestrator through a deployment handle."""

    def __init__(self, endpoints: ServiceEndpoints) -> None:
        settings = start_replica(endpoints, background=True)
        self._model: ChatModel = build_chat_model(settings.llm)

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """One chat completion."""
        return await self._model.chat(request)
