"""Orchestrator deployment: a thin shell around
:class:`common.conversation.orchestrator.MessageOrchestrator`."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from common.channels.webchat import WebchatDrafts
from common.config import LLMProvider, LLMSettings, ServiceEndpoints
from common.conversation.orchestrator import MessageOrchestrator
from common.db.session import make_engine, make_sessionmaker
from common.domain import InboundMessage, OutboundResponse
from common.llm.base import ChatModel
from common.llm.factory import build_chat_model
from common.llm.openai_compat import OpenAICompatibleChatModel
from common.schemas import ChatRequest, ChatResponse, RetrievedChunk
from common.streams import StreamPublisher, connect
from deployments.proxy import Delegating, HandleProxy
from deployments.replica import start_replica


def direct_chat_model(llm: LLMSettings) -> ChatModel | None:
    """The client the orchestrator calls itself, or None when generation goes to the ``llm`` deployment.

    The deployment hosts the local model. An OpenAI-compatible endpoint (``openai``; ``vllm``, which is
    Ray Serve LLM's own OpenAI app with its own queue and autoscaling) needs no host, and forwarding
    through the deployment costs one more Serve hop per generation, so it is called from here unless
    ``llm.via_deployment`` asks for the hop.
    """
    if llm.provider is LLMProvider.LOCAL or llm.via_deployment:
        return None
    return build_chat_model(llm)


# Drafting holds a slot for retrieval + generation; a bounded queue sheds load with a fast 503 (mapped
# at the gateway; the inbound worker leaves such entries pending and retries them) instead of waiting.
# 16 queued (was 64): in the knee run a queue of 64 behind ~16 drafts/s let answers wait 12 s at twice
# the capacity before anything was shed; with 16 the excess is refused (docs/PERFORMANCE.md, knee).
@serve.deployment(
    name="orchestrator",
    ray_actor_options={"num_cpus": 0.1},
    max_ongoing_requests=32,
    max_queued_requests=16,
)
class OrchestratorDeployment(Delegating):
    """Answers inbound messages: retrieval goes to the knowledge deployment, generation to the LLM
    deployment (the local model) or straight to an OpenAI-compatible endpoint (``llm.via_deployment``).

    Every public method of :class:`MessageOrchestrator` (``handle``, ``accept``, ``process_stored``, ...)
    is callable through the handle (see :class:`deployments.proxy.Delegating`).
    """

    def __init__(
        self, knowledge: DeploymentHandle[Any], llm: DeploymentHandle[Any], endpoints: ServiceEndpoints
    ) -> None:
        settings = start_replica(endpoints, background=True)
        self._knowledge = HandleProxy(knowledge)
        self._llm = HandleProxy(llm)
        self._model = direct_chat_model(settings.llm)
        chat: Callable[[ChatRequest], Awaitable[ChatResponse]] = (
            self._model.chat if self._model else self._chat
        )
        engine = make_engine(settings.database.url or "", pool_size=settings.database.pool_size)
        redis = connect(settings.redis)
        self._publisher = StreamPublisher(redis, settings.redis)
        self._target = self._pipeline = MessageOrchestrator(
            settings=settings,
            sessionmaker=make_sessionmaker(engine),
            retrieve=self._retrieve,
            rank=self._rank,
            spell=self._spell,
            chat=chat,
            publisher=self._publisher,
            # Streaming needs the model here (the direct OpenAI-compatible client), not behind a handle.
            stream=self._model.stream if isinstance(self._model, OpenAICompatibleChatModel) else None,
            drafts=lambda conversation_id, inbound_id: WebchatDrafts(
                redis, settings.redis, conversation_id=conversation_id, in_reply_to=inbound_id
            ),
            redis=redis,
        )

    async def _retrieve(
        self, tenant_id: uuid.UUID, brand_id: uuid.UUID, query: str, top_k: int
    ) -> list[RetrievedChunk]:
        chunks: list[RetrievedChunk] = await self._knowledge.retrieve(tenant_id, brand_id, query, top_k)
        return chunks

    async def _rank(self, query: str, sentences: list[str]) -> list[float]:
        scores: list[float] = await self._knowledge.rank_sentences(query, sentences)
        return scores

    async def _spell(self, tenant_id: uuid.UUID, brand_id: uuid.UUID, text: str) -> str:
        corrected: str = await self._knowledge.correct_spelling(tenant_id, brand_id, text)
        return corrected

    async def _chat(self, request: ChatRequest) -> ChatResponse:
        response: ChatResponse = await self._llm.chat(request)
        return response

    async def handle(self, message: InboundMessage) -> OutboundResponse:
        """Answer one inbound message (idempotent on its provider message id)."""
        return await self._pipeline.handle(message)
