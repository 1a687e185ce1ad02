"""Web chat HTTP routes, mounted on the gateway with ``app.include_router(build_webchat_router(backend))``.

=========================================  ==========================================================
``GET  /v1/webchat/{token}/config``        brand name, greeting and colors for the widget
``POST /v1/webchat/{token}/messages``      store a visitor message (idempotent) → 202; answered async
``GET  /v1/webchat/{token}/events``        SSE: replies of the visitor's conversation as delivered
``GET  /v1/webchat/{token}/history``       the conversation so far, with citations (page reloads)
``GET  /widget.js``                        the embeddable widget (one ``<script data-token>`` tag)
``GET  /chat/{brand_id}``                  a full-page chat for the brand's first widget
=========================================  ==========================================================

The ``/v1/webchat`` routes are called cross-origin from the brands' sites, so they answer CORS
preflights and put ``Access-Control-Allow-Origin`` on every answer, errors included (no credentials
are used: the visitor id and identity travel in the body or query). Errors keep the gateway's body
``{"error": {code, message, details}}``; 429 adds ``Retry-After``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute

from common.db import repositories as repo
from common.db.models import Conversation
from common.domain import Channel, Direction, InboundMessage
from common.errors import AssistantError, InvalidInput, NotFound, RateLimited
from common.logging import bind_correlation_id, get_logger
from common.media_store import build_media_store
from common.observability import message_received, stage
from serve_apps.gateway.backend import GatewayBackend
from serve_apps.gateway.errors import error_response, unwrap_error, validation_error
from serve_apps.gateway.views import attachment_response
from serve_apps.webchat.events import messages_out, reply_stream
from serve_apps.webchat.identity import Visitor, resolve_visitor
from serve_apps.webchat.ratelimit import FixedWindowLimiter
from serve_apps.webchat.schemas import (
    WebchatAcceptedOut,
    WebchatHistoryOut,
    WebchatMessageIn,
    WidgetConfigOut,
)
from serve_apps.webchat.widgets import Widget, brand_widget, resolve_widget

log = get_logger(__name__)

API_PREFIX = "/v1/webchat"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Retry-After",
}
PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "content-type, last-event-id, x-correlation-id",
    "Access-Control-Max-Age": "600",
}
VisitorIdQuery = Annotated[str | None, Query(max_length=128)]
IdentityQuery = Annotated[str | None, Query(max_length=1024)]
AfterQuery = Annotated[uuid.UUID | None, Query(description="Last message id the client has")]
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class WebchatRoute(APIRoute):
    """Maps errors to the gateway's body here (not in the app) so they too carry the CORS headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler: errors → JSON body (+ ``Retry-After``), CORS on cross-origin routes."""
        handler = super().get_route_handler()
        cross_origin = self.path.startswith(API_PREFIX)

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except RequestValidationError as exc:
                response = error_response(validation_error(exc))
            except Exception as exc:
                original = unwrap_error(exc)
                if not isinstance(original, AssistantError):
                    raise
                response = _error(original)
            if cross_origin:
                response.headers.update(CORS_HEADERS)
            return response

        return route


def build_webchat_router(backend: GatewayBackend) -> APIRouter:
    """The web chat routes over ``backend`` (in-process objects or Serve handle proxies)."""
    router = APIRouter(route_class=WebchatRoute, tags=["webchat"])
    media_store = build_media_store(backend.settings)  # agents' files the visitor downloads
    cfg = backend.settings.webchat
    redis_key = backend.settings.redis.key
    send_limit = FixedWindowLimiter(
        backend.redis, key_prefix=redis_key("ratelimit", "webchat", "send"),
        limit=cfg.messages_per_window, window_s=cfg.window_s,
    )  # fmt: skip
    read_limit = FixedWindowLimiter(
        backend.redis, key_prefix=redis_key("ratelimit", "webchat", "read"),
        limit=cfg.reads_per_window, window_s=cfg.window_s,
    )  # fmt: skip

    async def visitor_of(
        request: Request, token: str, visitor_id: str | None, identity: str | None
    ) -> tuple[Widget, Visitor]:
        widget = await resolve_widget(backend.sessionmaker, token)
        widget.check_origin(request.headers.get("origin"))
        visitor = resolve_visitor(
            secret=backend.settings.channels.webchat_identity_secret,
            token=token,
            visitor_id=visitor_id,
            identity=identity,
            require_identity=widget.display.require_identity,
            max_ttl_s=cfg.identity_max_ttl_s,
        )
        return widget, visitor

    async def reader_conversation(
        request: Request, token: str, visitor_id: str | None, identity: str | None
    ) -> Conversation | None:
        """The visitor's conversation, if any yet (visitor authenticated, read rate limit applied)."""
        widget, visitor = await visitor_of(request, token, visitor_id, identity)
        await read_limit.check(f"{token}:{visitor.customer_id}")
        async with backend.sessionmaker() as session:
            conversation = await repo.find_conversation(
                session, brand_id=widget.brand.id, channel=Channel.WEBCHAT, customer_id=visitor.customer_id
            )
        return conversation

    @router.options(API_PREFIX + "/{token}/{rest:path}", include_in_schema=False)
    async def preflight(token: str, rest: str) -> Response:
        return Response(status_code=204, headers=PREFLIGHT_HEADERS)

    @router.get(API_PREFIX + "/{token}/config", response_model=WidgetConfigOut)
    async def widget_config(token: str, request: Request) -> WidgetConfigOut:
        widget = await resolve_widget(backend.sessionmaker, token)
        widget.check_origin(request.headers.get("origin"))
        return widget.config_out()

    @router.post(API_PREFIX + "/{token}/messages", status_code=202, response_model=WebchatAcceptedOut)
    async def post_message(token: str, body: WebchatMessageIn, request: Request) -> WebchatAcceptedOut:
        widget, visitor = await visitor_of(request, token, body.visitor_id, body.identity)
        await send_limit.check(f"{token}:{visitor.customer_id}")
        cid = request.headers.get("x-correlation-id")
        with (
            bind_correlation_id(cid, brand_id=str(widget.brand.id), channel=Channel.WEBCHAT.value),
            stage("webchat.message", stage_label="webchat", channel=Channel.WEBCHAT.value),
            message_received(),
        ):
            message = InboundMessage(
                brand_id=widget.brand.id,
                channel=Channel.WEBCHAT,
                customer_id=visitor.customer_id,
                text=body.text,
                # Namespaced by visitor: two visitors may well both send client id "1".
                provider_message_id=f"{visitor.customer_id}/{body.client_message_id}",
            )
            accepted = await backend.intake.accept(message)
            log.info("webchat_message_accepted", chars=len(body.text), duplicate=accepted.duplicate)
        return WebchatAcceptedOut(
            message_id=accepted.inbound_id,
            conversation_id=accepted.conversation_id,
            duplicate=accepted.duplicate,
        )

    @router.get(API_PREFIX + "/{token}/history", response_model=WebchatHistoryOut)
    async def history(
        token: str,
        request: Request,
        visitor_id: VisitorIdQuery = None,
        identity: IdentityQuery = None,
    ) -> WebchatHistoryOut:
        conversation = await reader_conversation(request, token, visitor_id, identity)
        if conversation is None:
            return WebchatHistoryOut(conversation_id=None, messages=[])
        async with backend.sessionmaker() as session:
            rows = await repo.recent_messages(
                session, conversation_id=conversation.id, limit=cfg.history_limit
            )
            messages = await messages_out(session, [r for r in rows if r.text])
        return WebchatHistoryOut(conversation_id=conversation.id, messages=messages)

    @router.get(API_PREFIX + "/{token}/media/{media_id}", response_class=Response)
    async def media(
        token: str,
        media_id: uuid.UUID,
        request: Request,
        visitor_id: VisitorIdQuery = None,
        identity: IdentityQuery = None,
    ) -> Response:
        # A file a person sent this visitor: only from the visitor's own conversation, else the one 404.
        conversation = await reader_conversation(request, token, visitor_id, identity)
        async with backend.sessionmaker() as session:
            row = await repo.get_media(session, media_id=media_id)
            message = await repo.get_message(session, message_id=row.message_id) if row is not None else None
            data = None
            if (
                row is not None
                and message is not None
                and conversation is not None
                and message.conversation_id == conversation.id
                and message.direction == Direction.OUTBOUND
                and row.status == "stored"
            ):
                data = await media_store.get(session, row)
        if data is None or row is None:
            raise NotFound("unknown media", details={"media_id": str(media_id)})
        return attachment_response(row, data)

    @router.get(API_PREFIX + "/{token}/events", response_class=StreamingResponse)
    async def events(
        token: str,
        request: Request,
        visitor_id: VisitorIdQuery = None,
        identity: IdentityQuery = None,
        after: AfterQuery = None,
    ) -> StreamingResponse:
        conversation = await reader_conversation(request, token, visitor_id, identity)
        if conversation is None:
            raise NotFound("no conversation yet; send a message first")
        stream = reply_stream(
            settings=backend.settings,
            sessionmaker=backend.sessionmaker,
            redis=backend.redis,
            conversation_id=conversation.id,
            after=_last_event_id(request) or after,
            is_disconnected=request.is_disconnected,
        )
        return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)

    @router.get("/widget.js", include_in_schema=False)
    async def widget_js() -> Response:
        return Response(
            _static("widget.js"),
            media_type="application/javascript; charset=utf-8",
            headers={"Cache-Control": "public, max-age=300", **CORS_HEADERS},
        )

    @router.get("/chat/{brand_id}", response_class=HTMLResponse)
    async def chat_page(brand_id: uuid.UUID) -> HTMLResponse:
        widget = await brand_widget(backend.sessionmaker, brand_id)
        page = _static("chat.html")
        for name, value in {
            "BRAND_ID": str(widget.brand.id),
            "BRAND_NAME": widget.brand.name,
            "TOKEN": widget.token,
        }.items():
            page = page.replace("{{" + name + "}}", _html(value))
        headers = {"Cache-Control": "no-store"}
        if widget.display.allowed_origins:  # only the brand's own sites may frame its chat page
            headers["Content-Security-Policy"] = "frame-ancestors 'self' " + " ".join(
                widget.display.allowed_origins
            )
        return HTMLResponse(page, headers=headers)

    return router


def _static(name: str) -> str:
    return resources.files("serve_apps.webchat").joinpath("static", name).read_text(encoding="utf-8")


def _last_event_id(request: Request) -> uuid.UUID | None:
    raw = request.headers.get("last-event-id")
    if not raw:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise InvalidInput("Last-Event-ID is not a message id") from exc


def _error(exc: AssistantError) -> JSONResponse:
    response = error_response(exc)
    if isinstance(exc, RateLimited) and "retry_after_s" in exc.details:
        response.headers["Retry-After"] = str(exc.details["retry_after_s"])
    return response


def _html(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
