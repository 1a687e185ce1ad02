"""Request middleware: the body-size limit, and one log line, span and correlation id per request."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from fastapi import Request
from opentelemetry import trace
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from common import telemetry
from common.errors import PayloadTooLarge
from common.logging import bind_correlation_id, get_logger
from serve_apps.gateway.errors import error_response, map_error

log = get_logger(__name__)

MAX_BODY_BYTES = 2 * 1024 * 1024
#: Probe and scrape paths: answered without a span (a scrape every 15 s would bury the real traces).
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


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
                response = map_error(exc)
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
