"""Gateway ingress deployment: HTTP in, deployment handles out."""

from __future__ import annotations

from typing import Any, cast

from ray import serve
from ray.serve.handle import DeploymentHandle

from common.config import ServiceEndpoints
from common.conversation.intake import Intake
from common.db.session import make_engine, make_sessionmaker
from common.outbox import OutboxPublisher
from common.streams import StreamPublisher, connect
from deployments.proxy import HandleProxy
from deployments.replica import start_replica
from serve_apps.gateway.app import build_gateway_api
from serve_apps.gateway.backend import Conversations, KnowledgeIndex
from serve_apps.gateway.readiness import dependencies_ready


# Beyond max_ongoing + max_queued requests per replica, Serve answers 503 at once instead of letting
# webhooks time out: providers retry, and the load benchmark shows where that knee is.
@serve.deployment(
    name="gateway",
    ray_actor_options={"num_cpus": 0.1},
    max_ongoing_requests=128,
    max_queued_requests=64,
)
@serve.ingress()
class GatewayDeployment:
    """Channel webhooks, web chat and the public API; the FastAPI app is built per replica."""

    def __init__(
        self,
        orchestrator: DeploymentHandle[Any],
        knowledge: DeploymentHandle[Any],
        endpoints: ServiceEndpoints,
        **workers: DeploymentHandle[Any],
    ) -> None:
        settings = start_replica(endpoints, background=False)
        problems = settings.production_problems()
        if problems:  # a production gateway never serves with its API unauthenticated
            raise RuntimeError("refusing to start: " + "; ".join(problems))
        self.settings = settings
        # A handle is untyped RPC; seen as the Protocol of the object it serves, callers are
        # type-checked, and tests/unit/gateway/test_gateway_backend.py checks the deployment has each method.
        self.orchestrator = cast(Conversations, HandleProxy(orchestrator))
        self.knowledge = cast(KnowledgeIndex, HandleProxy(knowledge))
        self.sessionmaker = make_sessionmaker(make_engine(settings.database.url or "", pool_size=5))
        self.redis = connect(settings.redis)
        # Webhooks and web chat only need `accept` (one transaction + XADD) before they answer. Doing it
        # here, not through the orchestrator's handle, keeps acknowledgements off the queue of slow
        # drafting calls that the orchestrator replicas serve for the inbound worker.
        self.intake = Intake(
            settings=settings,
            sessionmaker=self.sessionmaker,
            outbox=OutboxPublisher(self.sessionmaker, StreamPublisher(self.redis, settings.redis)),
            publish_after_ack=True,
        )
        # Worker deployments (inbound worker, dispatcher, ...) are bound here only so the one Serve
        # application deploys them; the gateway never calls them.
        self._workers = workers

    def __serve_build_asgi_app__(self) -> Any:
        return build_gateway_api(self)

    async def ready(self) -> dict[str, bool]:
        """Postgres and Redis answer."""
        return await dependencies_ready(self.sessionmaker, self.redis)
