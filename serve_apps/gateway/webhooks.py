"""Webhook routes: verify the raw body, parse it, resolve each event's brand, make it durable, then 200.

Policy, the same for every channel:

* the raw body is read once and verified before it is parsed: a bad or missing signature or secret is
  401 and nothing is written;
* the URL chooses the secret before the body is read: a channel connection with its own credentials has
  its own URL (``/webhooks/meta/{app_id}`` for the WhatsApp numbers and Instagram accounts of one Meta
  app, ``/webhooks/telegram/{connection_id}`` for a bot) and only the accounts that secret belongs to are
  admitted; the default URLs (``/webhooks/whatsapp``, ``/webhooks/instagram``,
  ``/webhooks/telegram/{bot_id}``) use the ``CHANNELS__*`` settings and admit only connections without
  credentials of their own;
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

import asyncio
import dataclasses
import hmac
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import SecretStr

from common.channels import telegram
from common.channels.base import ChannelEvent, IgnoredEvent, ParsedEvent, StatusEvent
from common.channels.meta import verify_meta_signature
from common.channels.registry import get_adapter
from common.db import repositories as repo
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
#: Meta app ids are numeric; letters, ``_`` and ``-`` are allowed for the simulator's ids.
APP_ID = r"^[A-Za-z0-9_-]{1,64}$"
BOT_ID = re.compile(r"[0-9]{1,20}")
#: The envelope ``object`` of each Meta product an app's webhook delivers.
META_OBJECTS = {"whatsapp_business_account": Channel.WHATSAPP, "instagram": Channel.INSTAGRAM}


@dataclass
class WebhookResult:
    """What one webhook delivery did (the 200 body)."""

    accepted: int = 0
    duplicates: int = 0
    ignored: int = 0
    receipts: int = 0  # provider receipts applied to the brand's deliveries

    def body(self) -> dict[str, Any]:
        """JSON body of the acknowledgement."""
        return {"status": "ok", **self.__dict__}


def build_channels_router(backend: GatewayBackend) -> APIRouter:
    """Per-connection routes ``/webhooks/meta/{app_id}`` (GET+POST), ``/webhooks/telegram/{connection_id}``;
    the single-connection defaults ``/webhooks/whatsapp``, ``/webhooks/instagram`` (GET+POST) and
    ``/webhooks/telegram/{bot_id}``, verified with the ``CHANNELS__*`` settings.

    A connection with its own credentials is reachable only through its own URL: the default routes
    admit only accounts whose connection has none, so the deployment's secret cannot speak for it.
    """
    router = APIRouter(prefix="/webhooks", tags=["channels"])
    channels = backend.settings.channels

    async def meta_verification(
        mode: Annotated[str, Query(alias="hub.mode")],
        token: Annotated[str, Query(alias="hub.verify_token")],
        challenge: Annotated[str, Query(alias="hub.challenge", max_length=512)],
    ) -> Response:
        # Meta's subscription handshake: echo the challenge only to someone who knows the verify token.
        return _handshake(mode, challenge, lambda: verify_meta_token(channels.meta_verify_token, token))

    async def whatsapp(request: Request) -> Response:
        return await _answer(_receive_default(backend, request, Channel.WHATSAPP))

    async def instagram(request: Request) -> Response:
        return await _answer(_receive_default(backend, request, Channel.INSTAGRAM))

    async def app_verification(
        app_id: Annotated[str, Path(pattern=APP_ID)],
        mode: Annotated[str, Query(alias="hub.mode")],
        token: Annotated[str, Query(alias="hub.verify_token")],
        challenge: Annotated[str, Query(alias="hub.challenge", max_length=512)],
    ) -> Response:
        routes = await backend.intake.app_routes(app_id)
        tokens = [SecretStr(t) for t in {r.secret("verify_token") for r in routes} - {None} if t]

        def check() -> None:
            # Unknown app and wrong token look the same; each configured token is compared in constant time.
            if not any(_equal(t.get_secret_value(), token) for t in tokens):
                raise Unauthorized("verify token does not match")

        return _handshake(mode, challenge, check)

    async def meta_app(request: Request, app_id: Annotated[str, Path(pattern=APP_ID)]) -> Response:
        return await _answer(_receive_meta_app(backend, request, app_id))

    async def telegram(request: Request, account: Annotated[str, Path(max_length=64)]) -> Response:
        # One path, two kinds of id: a connection's own URL (UUID) or a bot id on the default secret.
        return await _answer(_receive_telegram(backend, request, account))

    for path, handler in (("/whatsapp", whatsapp), ("/instagram", instagram)):
        router.add_api_route(path, meta_verification, methods=["GET"])
        router.add_api_route(path, handler, methods=["POST"])
    router.add_api_route("/meta/{app_id}", app_verification, methods=["GET"])
    router.add_api_route("/meta/{app_id}", meta_app, methods=["POST"])
    router.add_api_route("/telegram/{account}", telegram, methods=["POST"])
    return router


def _handshake(mode: str, challenge: str, check: Callable[[], None]) -> Response:
    if mode != "subscribe":
        return _error(InvalidInput("hub.mode must be 'subscribe'", details={"hub.mode": mode}))
    try:
        check()
    except Unauthorized as exc:
        return _error(exc)
    return PlainTextResponse(challenge)


def _uses_defaults(route: ChannelRoute) -> bool:
    return route.credentials is None


async def _receive_default(backend: GatewayBackend, request: Request, channel: Channel) -> dict[str, Any]:
    """``/webhooks/whatsapp`` and ``/webhooks/instagram``: the deployment's app secret."""
    body = await _read(request)
    get_adapter(channel).verify(
        headers=request.headers, body=body, secret=_reveal(backend.settings.channels.meta_app_secret)
    )
    events = get_adapter(channel).parse(_json(body))
    return await _ingest(backend, request, channel, events, admit=_uses_defaults)


async def _receive_meta_app(backend: GatewayBackend, request: Request, app_id: str) -> dict[str, Any]:
    """``/webhooks/meta/{app_id}``: verified with the app secret of that app's connections, and only their
    accounts are admitted (a connection claiming another tenant's app id with its own secret can sign for
    its own accounts only)."""
    body = await _read(request)
    routes = await backend.intake.app_routes(app_id)
    secret = _matching_app_secret(routes, request.headers, body)
    admitted = {r.id for r in routes if r.secret("app_secret") == secret}
    payload = _json(body)
    obj = payload.get("object") if isinstance(payload, dict) else None
    channel = META_OBJECTS.get(obj) if isinstance(obj, str) else None
    if channel is None:  # Messenger pages and other products of the app are not answered
        log.info("webhook_event_ignored", reason=f"object {str(obj)[:64]!r} is not handled", app_id=app_id)
        return WebhookResult(ignored=1).body()
    events = get_adapter(channel).parse(payload)
    return await _ingest(backend, request, channel, events, admit=lambda r: r.id in admitted)


def _matching_app_secret(routes: Iterable[ChannelRoute], headers: Mapping[str, str], body: bytes) -> str:
    secrets = sorted({s for s in (r.secret("app_secret") for r in routes) if s})
    if not secrets:
        raise Unauthorized("webhook secret is not configured")
    for secret in secrets:
        try:
            verify_meta_signature(headers=headers, body=body, secret=secret)
        except Unauthorized:
            continue
        return secret
    raise Unauthorized("signature does not match")


async def _receive_telegram(backend: GatewayBackend, request: Request, account: str) -> dict[str, Any]:
    adapter = get_adapter(Channel.TELEGRAM)
    body = await _read(request)
    connection_id = _uuid(account)
    if connection_id is not None:
        route = await backend.intake.connection_route(connection_id)
        if route is None or route.channel is not Channel.TELEGRAM:
            raise Unauthorized("missing or wrong secret token")  # what a wrong secret gets: no oracle
        own = route
        adapter.verify(headers=request.headers, body=body, secret=own.secret("secret_token"))
        events = adapter.parse(_json(body), account_id=own.external_id)
        result = await _ingest(backend, request, Channel.TELEGRAM, events, admit=lambda r: r.id == own.id)
        _answer_callbacks(backend, events, own.secret("bot_token"))
        return result
    if not BOT_ID.fullmatch(account):
        raise InvalidInput("not a bot id or a connection id", details={"account": account[:64]})
    secret = _reveal(backend.settings.channels.telegram_secret_token)
    adapter.verify(headers=request.headers, body=body, secret=secret)
    events = adapter.parse(_json(body), account_id=account)
    result = await _ingest(backend, request, Channel.TELEGRAM, events, admit=_uses_defaults)
    _answer_callbacks(backend, events, _reveal(backend.settings.channels.telegram_bot_token))
    return result


#: Callback answers still running (held so the loop does not drop them; they never delay the 200).
_CALLBACK_ANSWERS: set[asyncio.Task[None]] = set()


def _answer_callbacks(backend: GatewayBackend, events: Iterable[ParsedEvent], token: str | None) -> None:
    """Answer every button tap of a stored delivery, in the background and best effort: the tap is
    already stored and answered by the bot, this only stops the spinner on the customer's button."""
    ids = [e.callback_id for e in events if isinstance(e, ChannelEvent) and e.callback_id]
    if not ids or not token:
        return
    api_url = backend.settings.channels.telegram_api_url

    async def answer() -> None:
        async with httpx.AsyncClient(timeout=5.0) as client:
            for callback_id in ids:
                try:
                    await telegram.answer_callback_query(
                        client, api_url=api_url, token=token, callback_id=callback_id
                    )
                except AssistantError as exc:  # expired query (>15 min), Telegram down: nothing to repair
                    log.info("telegram_callback_not_answered", error=exc.message)

    task = asyncio.create_task(answer())
    _CALLBACK_ANSWERS.add(task)
    task.add_done_callback(_CALLBACK_ANSWERS.discard)


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


async def _read(request: Request) -> bytes:
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise PayloadTooLarge("webhook body too large", details={"max_bytes": MAX_WEBHOOK_BYTES})
    return body


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidInput("webhook body is not valid JSON", details={"error": str(exc)}) from exc


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def _ingest(
    backend: GatewayBackend,
    request: Request,
    channel: Channel,
    events: list[ParsedEvent],
    *,
    admit: Callable[[ChannelRoute], bool],
) -> dict[str, Any]:
    """Record the verified events of one delivery; ``admit`` says which connections this URL speaks for."""
    with (
        bind_correlation_id(request.headers.get("x-correlation-id"), channel=channel.value),
        stage("webhook.receive", stage_label="webhook", channel=channel.value, events=len(events)) as span,
        message_received(),
    ):
        result = await _record(backend, channel, events, admit)
        for key, value in result.__dict__.items():
            span.set_attribute(key, value)
        log.info("webhook_received", events=len(events), **result.__dict__)
    return result.body()


async def _record(
    backend: GatewayBackend,
    channel: Channel,
    events: Iterable[ParsedEvent],
    admit: Callable[[ChannelRoute], bool],
) -> WebhookResult:
    """Accept every routable message in delivery order (order matters within a conversation)."""
    result = WebhookResult()
    for event in events:
        if isinstance(event, IgnoredEvent):
            log.info("webhook_event_ignored", reason=event.reason, account_id=event.account_id)
            result.ignored += 1
            continue
        if isinstance(event, StatusEvent):
            applied = await _receipt(backend, channel, event, admit)
            result.receipts += applied
            result.ignored += not applied
            continue
        route = await backend.intake.channel_route(channel, event.account_id)
        message = _message(backend, channel, route if route is not None and admit(route) else None, event)
        if message is None:
            result.ignored += 1
            continue
        accepted = await backend.intake.accept(message)
        if accepted.duplicate:
            result.duplicates += 1
        else:
            result.accepted += 1
    return result


async def _receipt(
    backend: GatewayBackend, channel: Channel, event: StatusEvent, admit: Callable[[ChannelRoute], bool]
) -> bool:
    """Apply a receipt to a delivery of the brand this URL verifiably speaks for; False when it matches
    none (another brand's message, one sent before receipts were kept, or an unrouted account)."""
    route = await backend.intake.channel_route(channel, event.account_id)
    if route is None or not admit(route):
        return False
    async with backend.sessionmaker() as session:
        found = await repo.record_receipt(
            session,
            brand_id=route.brand_id,
            channel=channel,
            provider_message_id=event.provider_message_id,
            receipt=event.status,
            error=event.error,
        )
        await session.commit()
    if event.status == "failed":
        log.warning(
            "delivery_failed_at_provider", provider_message_id=event.provider_message_id, error=event.error
        )
    return found


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
    media = event.media
    if media is not None:
        # Fetched later with this connection's credentials (the inbound worker, before drafting).
        media = dataclasses.replace(media, connection_id=config.id)
    return InboundMessage(
        brand_id=config.brand_id,
        channel=channel,
        customer_id=event.customer_id,
        text=text,
        provider_message_id=event.message_id,
        sent_at=event.sent_at,
        metadata=metadata,
        media=media,
    )


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
