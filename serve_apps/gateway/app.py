"""The gateway's HTTP API (FastAPI), independent of Ray.

The Serve gateway deployment (:mod:`serve_apps.gateway.deployment`) builds this app with a backend that
calls deployment handles; tests and the in-process baseline build it with a backend that calls the
pipeline directly. Nothing imports this module but those builders: route groups take the backend.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from common import metrics
from common.access.principal import Scope
from serve_apps.gateway.agents import build_agents_router
from serve_apps.gateway.auth import PUBLIC, Authenticator, requires
from serve_apps.gateway.backend import GatewayBackend
from serve_apps.gateway.errors import install_error_handlers
from serve_apps.gateway.knowledge import build_knowledge_router
from serve_apps.gateway.management import build_management_router
from serve_apps.gateway.messages import build_messages_router
from serve_apps.gateway.middleware import MAX_BODY_BYTES, BodySizeLimit, RequestContext
from serve_apps.gateway.webchat import build_webchat_router
from serve_apps.gateway.webhooks import build_channels_router


def build_gateway_api(backend: GatewayBackend, *, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app served by the gateway ingress."""
    # FastAPI's built-in telemetry is off: RequestContext opens the request's root span itself (a new
    # trace per request, callers' traceparent ignored), and FastAPI's OTel log records would carry
    # validation errors, i.e. pieces of request bodies.
    app = FastAPI(
        title="Messaging assistant gateway",
        version="0.1.0",
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.authenticator = Authenticator(backend.settings, lambda: backend.sessionmaker)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(RequestContext)
    install_error_handlers(app)

    @app.get("/healthz", dependencies=[PUBLIC])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", dependencies=[PUBLIC])
    async def readyz() -> JSONResponse:
        checks = await backend.ready()
        status = 200 if all(checks.values()) else 503
        return JSONResponse(status_code=status, content={"ready": status == 200, "checks": checks})

    @app.get("/metrics", include_in_schema=False, dependencies=[requires(Scope.METRICS)])
    async def prometheus_metrics() -> Response:
        # This process's registry only; in Ray, replicas record through Ray's metrics agent instead
        # (docs/OBSERVABILITY.md has the scrape configuration for both).
        return Response(content=metrics.render_latest(), media_type=CONTENT_TYPE_LATEST)

    # Each route declares its scope (serve_apps.gateway.auth); the public groups authenticate otherwise.
    app.include_router(build_management_router(backend))
    app.include_router(build_messages_router(backend))
    app.include_router(build_webchat_router(backend), dependencies=[PUBLIC])
    app.include_router(build_channels_router(backend), dependencies=[PUBLIC])
    app.include_router(build_agents_router(backend))
    app.include_router(build_knowledge_router(backend))
    return app
