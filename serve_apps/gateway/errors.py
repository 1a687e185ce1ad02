"""Errors become a machine-readable body at this edge only: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from common.errors import AssistantError, DependencyError, InvalidInput, unwrap_remote
from common.logging import get_logger

log = get_logger(__name__)


def unwrap_error(exc: BaseException) -> BaseException:
    """The original of a Ray-wrapped error (it carries our status code).

    Serve's ``BackPressureError`` from a downstream deployment's full queue becomes a retryable 503.
    """
    original = unwrap_remote(exc)
    if type(original).__name__ == "BackPressureError":
        return DependencyError("the assistant is at capacity; retry shortly", details={"retryable": True})
    return original


def error_response(exc: AssistantError) -> JSONResponse:
    """Map one of our errors to its HTTP status and body."""
    return JSONResponse(status_code=exc.status_code, content=exc.to_body())


def validation_error(exc: RequestValidationError) -> InvalidInput:
    """FastAPI's request validation failure as our 400 (field paths and messages, no input values)."""
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return InvalidInput("request failed validation", details={"errors": errors})


def map_error(exc: BaseException) -> JSONResponse:
    """Any exception that reached the edge: ours keep their status; anything else is a logged 500."""
    original = unwrap_error(exc)
    if isinstance(original, AssistantError):
        if original.status_code >= 500:
            log.warning("request_failed", code=original.code, error=original.message)
        return error_response(original)
    log.error("unhandled_error", error_type=type(original).__name__, exc_info=original)
    return error_response(AssistantError("internal error"))


def install_error_handlers(app: FastAPI) -> None:
    """Validation failures and our errors raised in routes; the rest is mapped by the middleware."""

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(AssistantError)
    async def _ours(_: Request, exc: AssistantError) -> JSONResponse:
        return map_error(exc)
