"""The gateway's HTTP API (FastAPI), independent of Ray.

The Serve gateway deployment builds this app with a backend that calls deployment handles; tests and
the in-process baseline build it with a backend that calls the pipeline directly. Errors become a
machine-readable body at this edge only: ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

import hmac
import time
import uuid
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

import redis.asyncio as aioredis
import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from common import metrics, telemetry
from common.config import Settings
from common.db import repositories as repo
from common.domain import (
    Channel,
    ConversationState,
    Direction,
    InboundMessage,
    OutboundResponse,
)
from common.errors import (
    AssistantError,
    DependencyError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from common.logging import bind_correlation_id, get_logger
from common.observability import message_received
from common.schemas import (
    CitationOut,
    ConversationOut,
    GuardrailOut,
    InboundMessageIn,
    IngestResult,
    KnowledgeUploadIn,
    MessageOut,
    ReplyOut,
)
from serve_apps.agents import build_agents_router
from serve_apps.channels.routes import build_channels_router

log = get_logger(__name__)

MAX_BODY_BYTES = 2 * 1024 * 1024
#: Probe and scrape paths: answered without a span (a scrape every 15 s would bury the real traces).
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class GatewayBackend(Protocol):
    """What the HTTP layer (and any router mounted on it) needs from the rest of the system.

    ``orchestrator`` and ``knowledge`` expose the public async methods of
    :class:`common.conversation.orchestrator.MessageOrchestrator` and
    :class:`common.knowledge.service.KnowledgeService`:
    the objects themselves in-process, :class:`deployments.proxy.HandleProxy` over Serve handles in the
    gateway deployment. Either way: ``await backend.orchestrator.accept(message)``.
    """

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: aioredis.Redis
    orchestrator: Any
    knowledge: Any
    #: Runs ``accept`` (store + queue) in the gateway's own process, for webhooks and web chat.
    intake: Any

    async def ready(self) -> dict[str, bool]:
        """Dependency checks for the readiness probe."""
        ...


def unwrap_error(exc: BaseException) -> BaseException:
    """Ray wraps errors raised in another replica; the original (``cause``) carries our status code.

    Serve's ``BackPressureError`` from a downstream deployment's full queue becomes a retryable 503.
    """
    cause = getattr(exc, "cause", None)
    original = cause if isinstance(cause, BaseException) else exc
    if type(original).__name__ == "BackPressureError":
        return DependencyError("the assistant is at capacity; retry shortly", details={"retryable": True})
    return original


def error_response(exc: AssistantError) -> JSONResponse:
    """Map one of our errors to its HTTP status and body."""
    return JSONResponse(status_code=exc.status_code, content=exc.to_body())


class BodySizeLimit(BaseHTTPMiddleware):
    """Reject bodies over the limit with 413 before parsing them."""

    def __init__(self, app: Any, *, max_bytes: int) -> None:
        super().__init__(app)
        self._max = max_bytes

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max:
            return error_response(PayloadTooLarge("request body too large", details={"max_bytes": self._max}))
        if request.method in {"POST", "PUT", "PATCH"}:
            body = await request.body()
            if len(body) > self._max:
                return error_response(
                    PayloadTooLarge("request body too large", details={"max_bytes": self._max})
                )
        return await call_next(request)


RESERVED_CUSTOMER_PREFIXES = ("anon:", "user:")  # web chat visitor ids; only the web chat routes mint them


def api_guard(backend: GatewayBackend) -> Any:
    """A FastAPI dependency enforcing ``API__TOKEN`` (when set) on the platform API."""

    async def check(request: Request) -> None:
        expected = backend.settings.api.token
        if expected is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            token.encode(), expected.get_secret_value().encode()
        )
        if not ok:
            raise Unauthorized("missing or invalid API token", details={"header": "Authorization: Bearer"})

    return Depends(check)


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
    guard = api_guard(backend)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(RequestContext)
    _install_error_handlers(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = await backend.ready()
        status = 200 if all(checks.values()) else 503
        return JSONResponse(status_code=status, content={"ready": status == 200, "checks": checks})

    @app.get("/metrics", include_in_schema=False, dependencies=[guard])
    async def prometheus_metrics() -> Response:
        # This process's registry only; in Ray, replicas record through Ray's metrics agent instead
        # (docs/OBSERVABILITY.md has the scrape configuration for both).
        return Response(content=metrics.render_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/messages/inbound", response_model=ReplyOut, dependencies=[guard])
    async def inbound(body: InboundMessageIn) -> ReplyOut:
        if body.customer_id.startswith(RESERVED_CUSTOMER_PREFIXES):
            # Those ids belong to web chat visitors; this API must not write into their conversations.
            raise InvalidInput(
                "customer_id prefix is reserved for web chat visitors",
                details={"reserved_prefixes": list(RESERVED_CUSTOMER_PREFIXES)},
            )
        with (
            structlog.contextvars.bound_contextvars(brand_id=str(body.brand_id), channel=str(body.channel)),
            message_received(),
        ):
            message = InboundMessage(
                brand_id=body.brand_id,
                channel=body.channel,
                customer_id=body.customer_id,
                text=body.text,
                provider_message_id=body.message_id or uuid.uuid4().hex,
            )
            reply: OutboundResponse = await backend.orchestrator.handle(message)
            log.info("message_answered", chars_in=len(body.text), chars_out=len(reply.text))
            return reply_out(reply)

    @app.get("/v1/conversations/{conversation_id}", response_model=ConversationOut, dependencies=[guard])
    async def conversation(conversation_id: uuid.UUID) -> ConversationOut:
        async with backend.sessionmaker() as session:
            found = await repo.get_conversation_with_messages(session, conversation_id=conversation_id)
        if found is None:
            raise NotFound("unknown conversation", details={"conversation_id": str(conversation_id)})
        conv, messages = found
        return ConversationOut(
            id=conv.id,
            brand_id=conv.brand_id,
            channel=Channel(conv.channel),
            customer_id=conv.customer_id,
            state=ConversationState(conv.state),
            messages=[
                MessageOut(
                    id=m.id,
                    direction=Direction(m.direction),
                    text=m.text,
                    created_at=m.created_at,
                    provider_message_id=m.provider_message_id,
                    citations=[CitationOut(**c) for c in (m.citations or [])],
                    guardrails=[GuardrailOut(**g) for g in (m.guardrails or [])],
                )
                for m in messages
            ],
        )

    @app.post(
        "/v1/brands/{brand_id}/knowledge", response_model=IngestResult, status_code=201, dependencies=[guard]
    )
    async def knowledge(brand_id: uuid.UUID, body: KnowledgeUploadIn) -> IngestResult:
        async with backend.sessionmaker() as session:
            brand = await repo.get_brand_profile(session, brand_id=brand_id)
        if brand is None:
            raise NotFound("unknown brand", details={"brand_id": str(brand_id)})
        with structlog.contextvars.bound_contextvars(brand_id=str(brand_id)):
            result: IngestResult = await backend.knowledge.ingest(brand.tenant_id, brand.id, body)
            log.info("knowledge_ingested", documents=result.documents, written=result.chunks_written)
            return result

    # Imported here: these routers import this module (GatewayBackend) themselves.
    from serve_apps.knowledge_api import build_knowledge_router
    from serve_apps.webchat.routes import build_webchat_router

    app.include_router(build_webchat_router(backend))
    app.include_router(build_channels_router(backend))
    app.include_router(build_agents_router(backend))
    app.include_router(build_knowledge_router(backend), dependencies=[guard])
    # Routers of other parts of the gateway (channels, web chat, agents, ...) are mounted here.
    return app


def reply_out(reply: OutboundResponse) -> ReplyOut:
    """HTTP view of a reply."""
    return ReplyOut(
        conversation_id=reply.conversation_id,
        message_id=reply.message_id,
        text=reply.text,
        citations=[
            CitationOut(chunk_id=c.chunk_id, source=c.source, heading_path=c.heading_path, score=c.score)
            for c in reply.citations
        ],
        guardrails=[GuardrailOut(rule=g.rule, action=g.action, reason=g.reason) for g in reply.guardrails],
        escalated=reply.escalated,
        duplicate=reply.duplicate,
    )


async def database_ready(sessionmaker: async_sessionmaker[AsyncSession]) -> bool:
    """``select 1`` through the pool; False on any database error."""
    try:
        async with sessionmaker() as session:
            await session.execute(text("select 1"))
    except Exception as exc:  # readiness must answer, whatever the driver raised
        log.warning("readiness_database_failed", error=str(exc))
        return False
    return True


async def dependencies_ready(
    sessionmaker: async_sessionmaker[AsyncSession], redis: aioredis.Redis
) -> dict[str, bool]:
    """The readiness checks every backend reports: Postgres and Redis answer."""
    try:
        redis_ok = bool(await redis.ping())
    except Exception as exc:  # readiness must answer, whatever redis-py raised
        log.warning("readiness_redis_failed", error=str(exc))
        redis_ok = False
    return {"database": await database_ready(sessionmaker), "redis": redis_ok}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return error_response(InvalidInput("request failed validation", details={"errors": errors}))

    @app.exception_handler(AssistantError)
    async def _ours(_: Request, exc: AssistantError) -> JSONResponse:
        return _map_error(exc)


def _map_error(exc: BaseException) -> JSONResponse:
    original = unwrap_error(exc)
    if isinstance(original, AssistantError):
        if original.status_code >= 500:
            log.warning("request_failed", code=original.code, error=original.message)
        return error_response(original)
    log.error("unhandled_error", error_type=type(original).__name__, exc_info=original)
    return error_response(AssistantError("internal error"))


class RequestContext(BaseHTTPMiddleware):
    """One canonical log line per request, a correlation id for everything it logs, and errors mapped.

    Errors that escape the routes (e.g. a Ray-wrapped error from another replica) are mapped here
    rather than in an ``Exception`` handler, which Starlette re-raises after responding.
    """

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        started = time.perf_counter()
        path = request.url.path
        with (
            bind_correlation_id(request.headers.get("x-correlation-id")) as cid,
            _request_span(request.method, path, cid) as span,
        ):
            try:
                response = await call_next(request)
            except Exception as exc:  # mapped to a machine-readable body, never a stack trace
                response = _map_error(exc)
            response.headers["x-correlation-id"] = cid
            span.set_attribute("http.status_code", response.status_code)
            trace_id = _trace_id(span)
            log.info(
                "request",
                method=request.method,
                path=path,
                status=response.status_code,
                ms=round((time.perf_counter() - started) * 1000, 1),
                **({"trace_id": trace_id} if trace_id else {}),
            )
            return response


def _request_span(method: str, path: str, cid: str) -> AbstractContextManager[trace.Span]:
    """The root span of one request; none for probes and scrapes.

    Always a new trace: a caller's ``traceparent`` header is not continued, since webhooks arrive from
    the public internet and a forged sampled flag would force sampling.
    """
    if path in UNTRACED_PATHS:
        return nullcontext(trace.INVALID_SPAN)
    attributes: dict[str, Any] = {"http.method": method, "http.target": path, "correlation_id": cid}
    return telemetry.span("gateway.request", **attributes)


def _trace_id(span: trace.Span) -> str | None:
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
