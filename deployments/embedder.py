"""Embedding model deployment: one model per replica, intra-op threads pinned."""

from __future__ import annotations

from ray import serve

from common import metrics
from common.config import ServiceEndpoints, get_settings
from common.embeddings import Embedder, build_embedder
from common.logging import configure_logging
from common.telemetry import configure_tracing
from deployments.proxy import TraceReceiving


@serve.deployment(name="embedder", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32)
class EmbedderDeployment(TraceReceiving):
    """Turns texts into vectors (the model loads once, in ``__init__``)."""

    def __init__(self, endpoints: ServiceEndpoints) -> None:
        settings = endpoints.apply(get_settings())
        configure_logging(level=settings.log_level, json=settings.log_json)
        configure_tracing(settings.telemetry)
        metrics.use_ray_metrics()
        self._embedder: Embedder = build_embedder(settings.embeddings)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors for ``texts``, in order."""
        return await self._embedder.aembed(texts)

    def info(self) -> tuple[str, int]:
        """(model name, dimension) — the knowledge index checks its collection against these."""
        return self._embedder.model_name, self._embedder.dimension
