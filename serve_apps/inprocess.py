"""The whole message pipeline in one process, without Ray Serve.

Same classes as the deployments, wired with direct calls instead of handles. Used by tests, by the
in-process baseline of the load benchmark, and for debugging with a plain debugger.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from common.channels.webchat import WebchatDrafts
from common.config import ServiceEndpoints, Settings
from common.conversation.orchestrator import MessageOrchestrator
from common.db.session import make_engine, make_sessionmaker
from common.knowledge.embeddings import Embedder, build_embedder, token_counter
from common.knowledge.service import KnowledgeService
from common.knowledge.vectorstore import VectorStore
from common.llm.base import ChatModel
from common.llm.factory import build_chat_model
from common.streams import StreamPublisher, connect
from serve_apps.gateway.readiness import dependencies_ready


class InProcessBackend:
    """A :class:`serve_apps.gateway.backend.GatewayBackend` that calls everything directly."""

    def __init__(
        self,
        settings: Settings,
        endpoints: ServiceEndpoints,
        *,
        embedder: Embedder | None = None,
        chat_model: ChatModel | None = None,
        publish_after_ack: bool = False,
    ) -> None:
        """``publish_after_ack``: the intake answers before its XADD, as the Serve gateway's does
        (``serve_apps/single_process.py``); off by default so tests see the stream entry on return."""
        self.settings = endpoints.apply(settings)
        s = self.settings
        self.engine: AsyncEngine = make_engine(s.database.url or "", pool_size=s.database.pool_size)
        self.sessionmaker = make_sessionmaker(self.engine)
        self.embedder = embedder or build_embedder(s.embeddings)
        self.store = VectorStore(s)
        self.store.ensure_collection(self.embedder.model_name, self.embedder.dimension)
        self.chat_model = chat_model or build_chat_model(s.llm)
        self.redis = connect(s.redis)
        self.knowledge = KnowledgeService(
            store=self.store,
            embed=self.embedder.aembed,
            count_tokens=token_counter(s.embeddings),
            sessionmaker=self.sessionmaker,
            retrieval=s.retrieval,
        )

        def pipeline(*, publish_after_ack: bool = False) -> MessageOrchestrator:
            return MessageOrchestrator(
                settings=s,
                sessionmaker=self.sessionmaker,
                retrieve=self.knowledge.retrieve,
                rank=self.knowledge.rank_sentences,
                spell=self.knowledge.correct_spelling,
                chat=self.chat_model.chat,
                publisher=StreamPublisher(self.redis, s.redis),
                publish_after_ack=publish_after_ack,
                # A model that streams (OpenAI-compatible) shows web chat replies as they are written.
                stream=getattr(self.chat_model, "stream", None),
                drafts=lambda conversation_id, inbound_id: WebchatDrafts(
                    self.redis, s.redis, conversation_id=conversation_id, in_reply_to=inbound_id
                ),
                redis=self.redis,
            )

        self.orchestrator = pipeline()
        # One process: accept runs where everything else does.
        self.intake = (
            pipeline(publish_after_ack=True).intake if publish_after_ack else self.orchestrator.intake
        )

    async def ready(self) -> dict[str, bool]:
        """Postgres and Redis answer."""
        return await dependencies_ready(self.sessionmaker, self.redis)

    async def aclose(self) -> None:
        """Release pools, clients and the vector store lock."""
        await self.orchestrator.aclose()
        await self.chat_model.aclose()
        await self.redis.aclose()
        await self.engine.dispose()
        self.store.close()
