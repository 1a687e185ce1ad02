"""The gateway's HTTP API (FastAPI), independent of Ray.

The Serve gateway deployment builds this app with a backend that calls deployment handles; tests and
the in-process baseline build it with a backend that calls the pipeline directly. Errors become a
machine-readable body at this edge only: ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

import uuid
from importlib import resources
from typing import Any, Protocol

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from common.config import Settings
from common.db import repositories as repo
from common.domain import (
    Channel,
    ConversationState,
    Direction,
    InboundMessage,
    OutboundResponse,
)
from common.errors import AssistantError, InvalidInput, NotFound, PayloadTooLarge
from common.logging import bind_correlation_id, get_logger
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

log = get_logger(__name__)

MAX_BODY_BYTES = 2 * 1024 * 1024


class GatewayBackend(Protocol):
    """What the HTTP layer (and any router mounted on it) needs from the rest of the system.

    ``orchestrator`` and ``knowledge`` expose the public async methods of
    :class:`common.orchestration.MessageOrchestrator` and :class:`common.knowledge_service.KnowledgeService`:
    the objects themselves in-process, :class:`deployments.proxy.HandleProxy` over Serve handles in the
    gateway deployment. Either way: ``await backend.orchestrator.accept(message)``.
    """

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: aioredis.Redis
    orchestrator: Any
    knowledge: Any

    async def ready(self) -> dict[str, bool]:
        """Dependency checks for the readiness probe."""
        ...


def unwrap_error(exc: BaseException) -> BaseException:
    """Ray wraps errors raised in another replica; the original (``cause``) carries our status code."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


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


def build_gateway_api(backend: GatewayBackend, *, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app served by the gateway ingress."""
    app = FastAPI(title="Messaging assistant gateway", version="0.1.0")
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    _install_error_handlers(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = await backend.ready()
        status = 200 if all(checks.values()) else 503
        return JSONResponse(status_code=status, content={"ready": status == 200, "checks": checks})

    @app.post("/v1/messages/inbound", response_model=ReplyOut)
    async def inbound(body: InboundMessageIn, request: Request) -> ReplyOut:
        cid = request.headers.get("x-correlation-id")
        with bind_correlation_id(cid, brand_id=str(body.brand_id), channel=str(body.channel)):
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

    @app.get("/v1/conversations/{conversation_id}", response_model=ConversationOut)
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

    @app.post("/v1/brands/{brand_id}/knowledge", response_model=IngestResult, status_code=201)
    async def knowledge(brand_id: uuid.UUID, body: KnowledgeUploadIn) -> IngestResult:
        async with backend.sessionmaker() as session:
            brand = await repo.get_brand_profile(session, brand_id=brand_id)
        if brand is None:
            raise NotFound("unknown brand", details={"brand_id": str(brand_id)})
        with bind_correlation_id(brand_id=str(brand_id)):
            result: IngestResult = await backend.knowledge.ingest(brand.tenant_id, brand.id, body)
            log.info("knowledge_ingested", documents=result.documents, written=result.chunks_written)
            return result

    @app.get("/chat/{brand_id}", response_class=HTMLResponse)
    async def chat_page(brand_id: uuid.UUID) -> HTMLResponse:
        async with backend.sessionmaker() as session:
            brand = await repo.get_brand_profile(session, brand_id=brand_id)
        if brand is None:
            raise NotFound("unknown brand", details={"brand_id": str(brand_id)})
        page = resources.files("serve_apps").joinpath("static/webchat.html").read_text(encoding="utf-8")
        page = page.replace("{{BRAND_ID}}", str(brand.id)).replace("{{BRAND_NAME}}", _html(brand.name))
        page = page.replace("{{GREETING}}", _html(brand.persona.greeting))
        return HTMLResponse(page)

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


def _html(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return error_response(InvalidInput("request failed validation", details={"errors": errors}))

    @app.exception_handler(Exception)
    async def _any(_: Request, exc: Exception) -> JSONResponse:
        original = unwrap_error(exc)
        if isinstance(original, AssistantError):
            if original.status_code >= 500:
                log.warning("request_failed", code=original.code, error=original.message)
            return error_response(original)
        log.error("unhandled_error", error_type=type(original).__name__, exc_info=original)
        return error_response(AssistantError("internal error"))
