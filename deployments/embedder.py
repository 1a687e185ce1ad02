"""Embedding model deployment: one model per replica, intra-op threads pinned."""

from __future__ import annotations

from ray import serve

from common.config import ServiceEndpoints
from common.knowledge.embeddings import Embedder, build_embedder
from deployments.proxy import TraceReceiving
from deployments.replica import start_replica


@serve.deployment(name="embedder", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32)
class EmbedderDeployment(TraceReceiving):
    """Turns texts into vectors (the model loads once, in ``__init__``)."""

    def __init__(self, endpoints: ServiceEndpoints) -> None:
        settings = start_replica(endpoints, background=True)
        self._embedder: Embedder = build_embedder(settings.embeddings)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors for ``texts``, in order."""
        return await self._embedder.aembed(texts)

    def info(self) -> tuple[str, int]:
        """(model name, dimension) — the knowledge index checks its collection against these."""
        return self._embedder.model_name, self._embedder.dimension
