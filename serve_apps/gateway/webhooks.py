"""Webhook routes: verify the raw body, parse it, resolve each event's brand, make it durable, then 200.

Policy, the same for every channel:

* the raw body is read once and verified before it is parsed: a bad or missing signature or secret is
  401 and nothing is written;
* malformed JSON or a payload without the documented shape is 400, a body over
  ``MAX_WEBHOOK_BYTES`` is 413 (machine-readable bodies, never a stack trace);
* each customer message is committed through ``orchestrator.accept`` (which queues it on the ``inbound``
  stream) before the 200, so the provider gets a fast answer and the inbound worker drafts the reply;
* events we do not handle, and accounts no ``ChannelConfig`` routes (or a disabled one), are logged and
  answered 200 with the same body shape, so a caller cannot tell whether another tenant's account exists;
* a failure to store (database down) is 503: the provider redelivers and idempotency keys (wamid, IG
  ``mid``, ``{bot_id}:{update_id}``) make the redelivery a no-op for what was already stored.
"""

from __future__ import annotations

import hmac
import json
import os
import re
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import SecretStr

from common.channels.base import ChannelEvent, IgnoredEvent, ParsedEvent
from common.channels.registry import get_adapter
from common.db.session import is_connection_error
from common.domain import Channel, ChannelRoute, InboundMessage
from common.errors import AssistantError, DatabaseUnavailable, InvalidInput, PayloadTooLarge, Unauthorized
from common.logging import bind_correlation_id, get_logger
from common.observability import message_received, stage
from serve_apps.gateway.backend import GatewayBackend

log = get_logger(__name__)

#: Provider webhooks are small (Meta batches stay well under 100 KB); anything bigger is refused.
MAX_WEBHOOK_BYTES = 256 * 1024
#: ``ChannelConfig.settings`` keys read here.
UNSUPPORTED_POLICY_KEY = "unsupported"  # "record" (default) | "ignore"
SECRET_ENV_KEY = "secret_token_env"  # noqa: S105 - a settings key naming an env var, not a secret
#: Only variables with this shape may be named by a ChannelConfig, so a row cannot expose other secrets.
SECRET_ENV_NAME = re.compile(r"^CHANNEL_SECRET_[A-Z0-9_]{1,64}$")


@dataclass
class WebhookResult:
    """What one webhook delivery did (the 200 body)."""

    accepted: int = 0
    duplicates: int = 0
    ignored: int = 0

    def body(self) -> dict[str, Any]:
        """JSON body of the acknowledgement."""
        return {"status": "ok", **self.__dict__}


def build_channels_router(backend: GatewayBackend) -> APIRouter:
    """Routes ``/webhooks/whatsapp``, ``/webhooks/instagram`` (GET+POST), ``/webhooks/telegram/{bot_id}``."""
    router = APIRouter(prefix="/webhooks", tags=["channels"])
    channels = backend.settings.channels

    async def meta_verification(
        mode: Annotated[str, Query(alias="hub.mode")],
        token: Annotated[str, Query(alias="hub.verify_token")],
        challenge: Annotated[str, Query(alias="hub.challenge", max_length=512)],
    ) -> Response:
        # Meta's subscription handshake: echo the challenge only to someone who knows the verify token.
        if mode != "subscribe":
            return _error(InvalidInput("hub.mode must be 'subscribe'", details={"hub.mode": mode}))
        try:
            verify_meta_token(channels.meta_verify_token, token)
        except Unauthorized as exc:
            return _error(exc)
        return PlainTextResponse(challenge)

    async def whatsapp(request: Request) -> Response:
        secret = _reveal(channels.meta_app_secret)
        return await _answer(_receive(backend, request, Channel.WHATSAPP, secret=secret))

    async def instagram(request: Request) -> Response:
        secret = _reveal(channels.meta_app_secret)
        return await _answer(_receive(backend, request, Channel.INSTAGRAM, secret=secret))

    async def telegram(request: Request, bot_id: Annotated[str, Path(pattern=r"^[0-9]{1,20}$")]) -> Response:
        secret = await _telegram_secret(backend, bot_id)
        return await _answer(_receive(backend, request, Channel.TELEGRAM, secret=secret, account_id=bot_id))

    for path, handler in (("/whatsapp", whatsapp), ("/instagram", instagram)):
        router.add_api_route(path, meta_verification, methods=["GET"])
        router.add_api_route(path, handler, methods=["POST"])
    router.add_api_route("/telegram/{bot_id}", telegram, methods=["POST"])
    return router


async def _answer(work: Awaitable[dict[str, Any]]) -> Response:
    """The 200 acknowledgement, or our error as its status and machine-readable body.

    Mapped here rather than left to the app's catch-all handler: Starlette re-raises exceptions that reach
    a handler for ``Exception`` after answering, which would log every forged webhook as a server error.
    """
    try:
        return JSONResponse(await work)
    except Exception as exc:
        cause = getattr(exc, "cause", None)  # Ray wraps errors raised in the orchestrator replica
        original = cause if isinstance(cause, BaseException) else exc
        if is_connection_error(original):
            # Database down (tests/chaos): 503, so the provider redelivers, rather than an opaque 500.
            original = DatabaseUnavailable("database unavailable", details={"error": type(original).__name__})
        if not isinstance(original, AssistantError):
            raise
        if original.status_code >= 500:
            log.warning("webhook_failed", code=original.code, error=original.message)
        return _error(original)


def _error(exc: AssistantError) -> JSONResponse:
    return JSONResponse(status_code=exc.status_code, content=exc.to_body())


def verify_meta_token(configured: SecretStr | None, received: str) -> None:
    """The verify token of Meta's GET handshake must match the configured one (constant time)."""
    expected = _reveal(configured)
    if not expected or not received:
        raise Unauthorized("verify token is not configured or missing")
    if not _equal(expected, received):
        raise Unauthorized("verify token does not match")


async def _receive(
    backend: GatewayBackend,
    request: Request,
    channel: Channel,
    *,
    secret: str | None,
    account_id: str | None = None,
) -> dict[str, Any]:
    adapter = get_adapter(channel)
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise PayloadTooLarge("webhook body too large", details={"max_bytes": MAX_WEBHOOK_BYTES})
    adapter.verify(headers=request.headers, body=body, secret=secret)
    try:
        payload = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidInput("webhook body is not valid JSON", details={"error": str(exc)}) from exc
    events = adapter.parse(payload, account_id=account_id)
    with (
        bind_correlation_id(request.headers.get("x-correlation-id"), channel=channel.value),
        stage("webhook.receive", stage_label="webhook", channel=channel.value, events=len(events)) as span,
        message_received(),
    ):
        result = await _record(backend, channel, events)
        for key, value in result.__dict__.items():
            span.set_attribute(key, value)
        log.info("webhook_received", events=len(events), **result.__dict__)
    return result.body()


async def _record(backend: GatewayBackend, channel: Channel, events: Iterable[ParsedEvent]) -> WebhookResult:
    """Accept every routable message in delivery order (order matters within a conversation)."""
    result = WebhookResult()
    for event in events:
        if isinstance(event, IgnoredEvent):
            log.info("webhook_event_ignored", reason=event.reason, account_id=event.account_id)
            result.ignored += 1
            continue
        route = await backend.intake.channel_route(channel, event.account_id)
        message = _message(backend, channel, route, event)
        if message is None:
            result.ignored += 1
            continue
        accepted = await backend.intake.accept(message)
        if accepted.duplicate:
            result.duplicates += 1
        else:
            result.accepted += 1
    return result


def _message(
    backend: GatewayBackend, channel: Channel, config: ChannelRoute | None, event: ChannelEvent
) -> InboundMessage | None:
    """The message to accept, or None (logged) when the account is not routed or policy says ignore."""
    if config is None or not config.enabled:
        log.info("webhook_account_not_routed", account_id=event.account_id)
        return None
    metadata: dict[str, str] = {}
    if event.unsupported is not None:
        if (config.settings or {}).get(UNSUPPORTED_POLICY_KEY, "record") == "ignore":
            log.info("webhook_unsupported_ignored", kind=event.unsupported, account_id=event.account_id)
            return None
        metadata["unsupported"] = event.unsupported
    text = event.text
    limit = backend.settings.max_message_chars
    if len(text) > limit:
        # Refusing would make the provider redeliver forever; the customer's first `limit` chars are kept.
        text, metadata["truncated_from"] = text[:limit], str(len(text))
    return InboundMessage(
        brand_id=config.brand_id,
        channel=channel,
        customer_id=event.customer_id,
        text=text,
        provider_message_id=event.message_id,
        metadata=metadata,
    )


async def _telegram_secret(backend: GatewayBackend, bot_id: str) -> str | None:
    """The bot's own secret when its ChannelConfig names one (``secret_token_env``), else the global one.

    A named variable that is unset or badly named refuses every request (None) rather than falling back.
    """
    config = await backend.intake.channel_route(Channel.TELEGRAM, bot_id)
    env_name = (config.settings or {}).get(SECRET_ENV_KEY) if config is not None else None
    if env_name is None:
        return _reveal(backend.settings.channels.telegram_secret_token)
    if not isinstance(env_name, str) or not SECRET_ENV_NAME.match(env_name):
        log.warning("telegram_secret_env_invalid", bot_id=bot_id)
        return None
    return os.environ.get(env_name) or None


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
