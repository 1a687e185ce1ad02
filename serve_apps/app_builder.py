"""Builds the Ray Serve application from typed arguments.

gateway (ingress) ──► orchestrator ──► knowledge ──► embedder
                                  └──► llm
gateway ──► knowledge (uploads)
inbound worker ──► orchestrator          (consumes the ``inbound`` stream: webhook messages)
dispatcher                               (outbox relay + ``outbound`` stream → provider send APIs)
ingestion worker                         (``ingest-jobs`` stream → Ray Data pipeline → knowledge)

Workers serve no requests; they are bound into the gateway's graph (as handles it keeps) so that one
Serve application deploys and scales everything.

Hops per answered message: gateway→orchestrator and orchestrator→knowledge. The knowledge replica
embeds queries itself (``embeddings.queries_in_knowledge``; the embedder deployment embeds documents
and scales apart), and an OpenAI-compatible LLM endpoint such as vLLM behind Ray Serve LLM is called
from the orchestrator (``deployments/orchestrator.py``); the local llama.cpp model adds
orchestrator→llm.

Use from Python (``build_app(AppArgs(...))``) or from a Serve config file
(``import_path: serve_apps.app_builder:app_builder`` with ``args:``); see ``serve_config.yaml``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from ray.serve import Application
from ray.serve.deployment import Deployment

from common.config import ServiceEndpoints
from deployments.dispatcher import DispatcherDeployment
from deployments.embedder import EmbedderDeployment
from deployments.inbound_worker import InboundWorkerDeployment
from deployments.ingestion_worker import IngestionWorkerDeployment
from deployments.knowledge import KnowledgeIndexDeployment
from deployments.llm import LLMDeployment
from deployments.orchestrator import OrchestratorDeployment
from serve_apps.gateway.deployment import GatewayDeployment

#: Serve's access log (a line per request, per replica, per hop) is off: the gateway logs one
#: canonical line per HTTP request with its correlation id, and per-stage latency is in the metrics
#: and traces. Under load those lines cost every replica CPU on the request path.
REPLICA_LOGGING = {"enable_access_log": False}


class AppArgs(BaseModel):
    """Arguments of the application; replicas default to one each (the 2-core local machine)."""

    endpoints: ServiceEndpoints
    gateway_replicas: int = Field(default=1, ge=1)
    orchestrator_replicas: int = Field(default=1, ge=1)
    embedder_replicas: int = Field(default=1, ge=1)
    llm_replicas: int = Field(default=1, ge=1)
    inbound_worker_replicas: int = Field(default=1, ge=1)
    dispatcher_replicas: int = Field(default=1, ge=1)
    ingestion_worker_replicas: int = Field(default=1, ge=1)
    knowledge_replicas: int = Field(
        default=1, ge=1, description="Must stay 1 with the embedded engine (it locks its directory)"
    )


def _deployment(decorated: object, replicas: int) -> Deployment:
    # @serve.deployment turns the classes into Deployment objects; mypy still sees the class.
    if not isinstance(decorated, Deployment):
        raise TypeError(f"{decorated!r} is not a Serve deployment")
    return decorated.options(num_replicas=replicas, logging_config=REPLICA_LOGGING)


def build_app(args: AppArgs) -> Application:
    """Compose the deployments into one Serve application."""
    ep = args.endpoints
    if ep.qdrant_url is None and args.knowledge_replicas != 1:
        raise ValueError("knowledge_replicas must be 1 when Qdrant runs embedded (no qdrant_url)")
    embedder = _deployment(EmbedderDeployment, args.embedder_replicas).bind(ep)
    knowledge = _deployment(KnowledgeIndexDeployment, args.knowledge_replicas).bind(embedder, ep)
    llm = _deployment(LLMDeployment, args.llm_replicas).bind(ep)
    orchestrator = _deployment(OrchestratorDeployment, args.orchestrator_replicas).bind(knowledge, llm, ep)
    inbound_worker = _deployment(InboundWorkerDeployment, args.inbound_worker_replicas).bind(orchestrator, ep)
    dispatcher = _deployment(DispatcherDeployment, args.dispatcher_replicas).bind(ep)
    ingestion_worker = _deployment(IngestionWorkerDeployment, args.ingestion_worker_replicas).bind(ep)
    return _deployment(GatewayDeployment, args.gateway_replicas).bind(
        orchestrator,
        knowledge,
        ep,
        inbound_worker=inbound_worker,
        dispatcher=dispatcher,
        ingestion_worker=ingestion_worker,
    )


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for Serve config files (``serve run serve_config.yaml``, KubeRay RayService)."""
    return build_app(AppArgs.model_validate(args))
