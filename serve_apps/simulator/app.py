"""The provider SIMULATOR's HTTP app: Meta Graph send endpoints and the Telegram Bot API, locally.

Not a provider: it speaks the providers' wire format closely enough to test senders, the dispatcher and
the demo end to end without the internet. Emulated endpoints:

* ``POST /{version}/{account_id}/messages``: WhatsApp Cloud API (body with ``messaging_product``) and
  Instagram messaging (body with ``recipient``); Graph error bodies ``{"error": {message, type, code}}``.
* ``POST /bot{token}/sendMessage``, ``/bot{token}/setWebhook``, ``deleteWebhook`` and ``getMe``: Telegram,
  ``{"ok": ...}`` envelopes.
* ``GET /_sim/sent`` (``?channel=``), ``DELETE /_sim/sent``, ``POST /_sim/faults`` (``FaultSpec``),
  ``GET /_sim/faults``: inspection and fault injection (429 with Retry-After, 500, 400, timeouts).
* media customers send: ``POST /_sim/media`` holds a file (``{content_b64, mime_type, transcript}``) and
  answers its id; then WhatsApp's ``GET /{version}/{media_id}`` (→ ``url``, ``file_size``...) and that
  URL (bearer token), Telegram's ``getFile`` and ``GET /file/bot{token}/{file_path}``, and an Instagram
  CDN URL ``GET /_sim/cdn/{media_id}`` serve it.
* WhatsApp's template list ``GET /{version}/{waba_id}/message_templates`` (set with
  ``PUT /_sim/templates/{waba_id}``; by default one approved ``support_followup`` template, ``en_US``,
  whose body has one parameter, and one still pending).
* ``POST /v1/audio/transcriptions``: a SIMULATED OpenAI-compatible speech-to-text endpoint. It does not
  recognise speech: it answers the ``transcript`` registered with exactly these bytes, and 400 for audio
  it did not hand out.
* ``answerCallbackQuery`` (Telegram) is recorded in ``GET /_sim/callback-answers``; read receipts and
  typing indicators (WhatsApp ``status: read``, Instagram ``sender_action``, Telegram ``sendChatAction``)
  in ``GET /_sim/signals``.
* ``POST /_sim/helpdesk/tickets``: a SIMULATED helpdesk speaking the ``create_ticket`` plugin's contract
  (``Idempotency-Key`` answers the same ticket again); ``GET /_sim/helpdesk/tickets`` lists them.
* ``GET /_sim/replies/{message_id}?wait_s=``: the sends that quote ``message_id`` (WhatsApp ``context``,
  Telegram ``reply_parameters``), waiting up to ``wait_s`` seconds for the first one: a load-test
  customer reads its answer before typing the next message.

Text limits are enforced as the providers do (WhatsApp 4096, Instagram 1000, Telegram 4096 characters),
and when ``meta_access_token`` / ``telegram_bot_token`` are given, other credentials are refused (401).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
from collections.abc import Collection, Mapping
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from serve_apps.simulator.state import FaultSpec, SentMessage, SimChannel, SimulatorState

#: The Bot API hands bots files up to this size (getFile answers "file is too big" above it).
TELEGRAM_FILE_LIMIT = 20 * 1024 * 1024


class MediaIn(BaseModel):
    """``POST /_sim/media``: a file a customer is about to send."""

    content_b64: str = Field(max_length=64 * 1024 * 1024)
    mime_type: str = Field(default="application/octet-stream", max_length=200)
    transcript: str | None = Field(
        default=None, description="For audio: what the SIMULATED speech-to-text says"
    )


LIMITS: dict[SimChannel, int] = {"whatsapp": 4096, "instagram": 1000, "telegram": 4096}


def build_simulator_app(
    state: SimulatorState,
    *,
    meta_access_token: str | None = None,
    telegram_bot_token: str | None = None,
    meta_access_tokens: Mapping[str, str] | None = None,
    telegram_bot_tokens: Collection[str] = (),
) -> FastAPI:
    """The simulator app over ``state``; pass tokens to make it check credentials.

    ``meta_access_tokens`` maps an account (phone number id, Instagram id) to the only token that may send
    from it, as Meta scopes a system user's token to its business's assets; ``meta_access_token`` is the
    token of every other account. ``telegram_bot_tokens`` (with ``telegram_bot_token``) are the bots that
    exist. With none of these, credentials are not checked.
    """
    per_account = dict(meta_access_tokens or {})
    bots = {t for t in (*telegram_bot_tokens, telegram_bot_token) if t}
    app = FastAPI(title="Provider SIMULATOR (Meta Graph, Telegram Bot API)", version="0.1.0")

    @app.get("/_sim/sent")
    async def sent(channel: SimChannel | None = None) -> list[SentMessage]:
        return state.sent(channel)

    # Waiters for a reply to one message id; resolved by the send handlers, which run on this same loop.
    waiters: dict[str, list[asyncio.Future[None]]] = {}

    def _replied(reply_to: str | None) -> None:
        for future in waiters.pop(reply_to or "", []):
            if not future.done():
                future.set_result(None)

    @app.get("/_sim/replies/{message_id}")
    async def replies(message_id: str, wait_s: float = Query(default=0.0, ge=0, le=120)) -> list[SentMessage]:
        found = state.replies_to(message_id)
        if found or wait_s == 0:
            return found
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.setdefault(message_id, []).append(future)
        try:
            await asyncio.wait_for(future, timeout=wait_s)
        except TimeoutError:
            pending = waiters.get(message_id, [])
            if future in pending:
                pending.remove(future)
            if not pending:
                waiters.pop(message_id, None)
        return state.replies_to(message_id)

    @app.delete("/_sim/sent")
    async def clear() -> dict[str, bool]:
        state.clear()
        return {"cleared": True}

    @app.post("/_sim/faults")
    async def add_fault(spec: FaultSpec) -> list[FaultSpec]:
        state.add_fault(spec)
        return state.pending_faults()

    @app.get("/_sim/faults")
    async def faults() -> list[FaultSpec]:
        return state.pending_faults()

    def _meta_authorised(request: Request) -> bool:
        if meta_access_token is None and not per_account:
            return True
        given = request.headers.get("authorization", "")
        tokens = {t for t in (meta_access_token, *per_account.values()) if t}
        return any(hmac.compare_digest(given.encode(), f"Bearer {t}".encode()) for t in tokens)

    @app.post("/_sim/media")
    async def add_media(body: MediaIn, request: Request) -> JSONResponse:
        try:
            data = base64.b64decode(body.content_b64, validate=True)
        except (binascii.Error, ValueError):
            return JSONResponse(status_code=400, content={"error": "content_b64 is not base64"})
        media = state.add_media(data, mime_type=body.mime_type, transcript=body.transcript)
        base = str(request.base_url).rstrip("/")
        url = f"{base}/_sim/cdn/{media.id}"
        return JSONResponse({"id": media.id, "sha256": media.sha256, "file_size": len(data), "url": url})

    @app.post("/_sim/helpdesk/tickets")
    async def open_ticket(request: Request) -> JSONResponse:
        body = await _json_body(request)
        key = request.headers.get("idempotency-key", "")
        if not key or not isinstance(body.get("subject"), str):
            return JSONResponse({"error": "subject and an Idempotency-Key header are required"}, 422)
        ticket, created = state.open_ticket(body, idempotency_key=key)
        return JSONResponse({"id": ticket["id"]}, status_code=201 if created else 200)

    @app.get("/_sim/helpdesk/tickets")
    async def tickets() -> list[dict[str, Any]]:
        return state.tickets()

    @app.get("/_sim/signals")
    async def signals() -> list[dict[str, Any]]:
        return state.signals()

    @app.get("/_sim/callback-answers")
    async def callback_answers() -> list[dict[str, Any]]:
        return list(state.callback_answers)

    @app.get("/_sim/cdn/{media_id}")
    async def cdn(media_id: str) -> Response:
        # Instagram's attachment URLs: the URL is the capability, no token.
        media = state.media(media_id)
        if media is None:
            return Response(status_code=404)
        return Response(media.data, media_type=media.mime_type)

    @app.get("/_sim/download/{media_id}")
    async def whatsapp_download(media_id: str, request: Request) -> Response:
        if not _meta_authorised(request):
            return _graph_error(401, 190, "Invalid OAuth access token (simulated)")
        media = state.media(media_id)
        if media is None:
            return Response(status_code=404)
        return Response(media.data, media_type=media.mime_type)

    @app.get("/file/{bot_path}/{file_path:path}")
    async def telegram_file(bot_path: str, file_path: str) -> Response:
        token = bot_path.removeprefix("bot")
        if bots and not any(hmac.compare_digest(token.encode(), b.encode()) for b in bots):
            return _tg_error(401, "Unauthorized")
        media = state.media(file_path.rsplit("/", 1)[-1])
        if media is None:
            return _tg_error(404, "Not Found")
        return Response(media.data, media_type="application/octet-stream")

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> JSONResponse:
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not form.get("model"):
            return JSONResponse(
                status_code=400, content={"error": {"message": "file and model are required"}}
            )
        transcript = state.transcript_of(await upload.read())
        if transcript is None:
            message = "SIMULATED transcription only knows audio registered with a transcript"
            return JSONResponse(
                status_code=400, content={"error": {"message": message, "type": "invalid_request_error"}}
            )
        return JSONResponse({"text": transcript})

    @app.get("/{version}/{waba_id}/message_templates")
    async def message_templates(version: str, waba_id: str, request: Request) -> JSONResponse:
        if not _meta_authorised(request):
            return _graph_error(401, 190, "Invalid OAuth access token (simulated)")
        return JSONResponse({"data": state.templates(waba_id), "paging": {"cursors": {}}})

    @app.put("/_sim/templates/{waba_id}")
    async def set_templates(waba_id: str, request: Request) -> JSONResponse:
        body = await request.json()
        if not isinstance(body, list):
            return JSONResponse(status_code=400, content={"error": "a list of Graph template objects"})
        state.set_templates(waba_id, body)
        return JSONResponse({"templates": len(body)})

    @app.get("/{version}/{media_id}")
    async def whatsapp_media(version: str, media_id: str, request: Request) -> JSONResponse:
        if not _meta_authorised(request):
            return _graph_error(401, 190, "Invalid OAuth access token (simulated)")
        media = state.media(media_id)
        if media is None:
            return _graph_error(400, 100, "(#100) Unsupported get request: no such media (simulated)")
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "url": f"{base}/_sim/download/{media.id}",
                "mime_type": media.mime_type,
                "sha256": media.sha256,
                "file_size": str(len(media.data)),  # a string, as Graph sends it
                "id": media.id,
            }
        )

    def _account_authorised(account_id: str, request: Request) -> bool:
        expected = per_account.get(account_id, meta_access_token)
        if expected is None and not per_account:
            return True
        given = request.headers.get("authorization", "")
        return expected is not None and hmac.compare_digest(given.encode(), f"Bearer {expected}".encode())

    @app.post("/{version}/{account_id}/media")
    async def whatsapp_upload(version: str, account_id: str, request: Request) -> JSONResponse:
        # The business uploads a file to send (multipart: messaging_product, type, file): its media id.
        if not _account_authorised(account_id, request):
            return _graph_error(401, 190, "Invalid OAuth access token (simulated)")
        form = await request.form()
        upload = form.get("file")
        if form.get("messaging_product") != "whatsapp" or not isinstance(upload, UploadFile):
            return _graph_error(400, 100, "(#100) messaging_product whatsapp and a file are required")
        data = await upload.read()
        media = state.add_media(data, mime_type=str(form.get("type") or upload.content_type or ""))
        return JSONResponse({"id": media.id})

    @app.post("/{version}/{account_id}/messages")
    async def graph_messages(version: str, account_id: str, request: Request) -> JSONResponse:
        body = await _json_body(request)
        channel: SimChannel = "whatsapp" if body.get("messaging_product") == "whatsapp" else "instagram"
        if not _account_authorised(account_id, request):
            return _graph_error(401, 190, "Invalid OAuth access token (simulated)")
        if body.get("status") == "read" or "sender_action" in body:
            # Read receipts and typing indicators: recorded apart, and never given the faults queued
            # for sends (a test's injected 429 is meant for a reply).
            return _signal(state, channel, account_id, body)
        fault = await _apply_fault(state, channel)
        if fault is not None:
            return _graph_fault(fault)
        parsed = _parse_whatsapp(body, state) if channel == "whatsapp" else _parse_instagram(body)
        if isinstance(parsed, str):
            return _graph_error(400, 100, parsed)
        recipient, text, reply_to = parsed
        if len(text) > LIMITS[channel]:
            return _graph_error(400, 100, f"message text longer than {LIMITS[channel]} characters")
        prefix = "wamid.SIM" if channel == "whatsapp" else "mid.SIM"
        record = state.record(
            channel=channel,
            account=account_id,
            recipient=recipient,
            text=text,
            reply_to=reply_to,
            body=body,
            id_prefix=prefix,
        )
        _replied(reply_to)
        if channel == "whatsapp":
            return JSONResponse(
                {
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": recipient, "wa_id": recipient}],
                    "messages": [{"id": record.provider_message_id}],
                }
            )
        return JSONResponse({"recipient_id": recipient, "message_id": record.provider_message_id})

    @app.post("/{bot_path}/{method}")
    async def telegram(bot_path: str, method: str, request: Request) -> JSONResponse:
        token = bot_path.removeprefix("bot")
        if not bot_path.startswith("bot") or ":" not in token:
            return _tg_error(404, "Not Found")
        if bots and not any(hmac.compare_digest(token.encode(), b.encode()) for b in bots):
            return _tg_error(401, "Unauthorized")
        body = {} if method in ("sendPhoto", "sendDocument") else await _json_body(request)
        bot_id = token.split(":", 1)[0]
        if method == "getMe":
            me = {"id": int(bot_id) if bot_id.isdigit() else 0, "is_bot": True, "first_name": "Sim"}
            return JSONResponse({"ok": True, "result": {**me, "username": f"sim_{bot_id}_bot"}})
        if method == "deleteWebhook":
            state.telegram_webhooks.pop(bot_id, None)
            return JSONResponse({"ok": True, "result": True, "description": "Webhook was deleted"})
        if method == "setWebhook":
            state.telegram_webhooks[token.split(":", 1)[0]] = body
            return JSONResponse({"ok": True, "result": True, "description": "Webhook was set"})
        if method == "getFile":
            media = state.media(str(body.get("file_id", "")))
            if media is None:
                return _tg_error(400, "Bad Request: invalid file_id")
            if len(media.data) > TELEGRAM_FILE_LIMIT:
                return _tg_error(400, "Bad Request: file is too big")
            result = {"file_id": media.id, "file_unique_id": media.sha256[:16], "file_size": len(media.data)}
            return JSONResponse({"ok": True, "result": {**result, "file_path": f"media/{media.id}"}})
        if method == "sendChatAction":
            if body.get("action") not in TELEGRAM_ACTIONS or body.get("chat_id") in (None, ""):
                return _tg_error(400, "Bad Request: wrong parameter action in request")
            state.record_signal({"channel": "telegram", "account": bot_id, **body})
            return JSONResponse({"ok": True, "result": True})
        if method == "answerCallbackQuery":
            if not body.get("callback_query_id"):
                return _tg_error(
                    400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
                )
            state.callback_answers.append({"bot_id": bot_id, **body})
            return JSONResponse({"ok": True, "result": True})
        if method in ("sendPhoto", "sendDocument"):
            return await _telegram_file(state, request, bot_id, method)
        if method != "sendMessage":
            return _tg_error(404, "Not Found: method not found")
        fault = await _apply_fault(state, "telegram")
        if fault is not None:
            return _tg_fault(fault)
        text = body.get("text")
        chat_id = body.get("chat_id")
        if not isinstance(text, str) or not text.strip():
            return _tg_error(400, "Bad Request: message text is empty")
        if chat_id in (None, ""):
            return _tg_error(400, "Bad Request: chat not found")
        if len(text) > LIMITS["telegram"]:
            return _tg_error(400, "Bad Request: message is too long")
        markup = body.get("reply_markup")
        rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
        for button in [b for row in rows or [] if isinstance(row, list) for b in row if isinstance(b, dict)]:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= 64:
                return _tg_error(400, "Bad Request: BUTTON_DATA_INVALID")
        reply = body.get("reply_parameters")
        reply_to = str(reply.get("message_id")) if isinstance(reply, dict) else None
        record = state.record(
            channel="telegram",
            account=token.split(":", 1)[0],
            recipient=str(chat_id),
            text=text,
            reply_to=reply_to,
            body=body,
            id_prefix="",
        )
        _replied(reply_to)
        message = {"message_id": record.seq, "chat": {"id": chat_id, "type": "private"}, "text": text}
        return JSONResponse({"ok": True, "result": {**message, "date": int(record.received_at)}})

    return app


TELEGRAM_ACTIONS = frozenset({"typing", "upload_photo", "record_voice", "upload_document", "find_location"})


async def _telegram_file(state: SimulatorState, request: Request, bot_id: str, method: str) -> JSONResponse:
    """``sendPhoto`` / ``sendDocument`` with the file in a multipart form: recorded as its caption."""
    field = "photo" if method == "sendPhoto" else "document"
    form = await request.form()
    upload, chat_id = form.get(field), form.get("chat_id")
    if not isinstance(upload, UploadFile) or not isinstance(chat_id, str) or not chat_id:
        return _tg_error(400, f"Bad Request: chat_id and the {field} file are required")
    caption = form.get("caption")
    caption = caption if isinstance(caption, str) else ""
    if len(caption) > 1024:
        return _tg_error(400, "Bad Request: message caption is too long")
    data = await upload.read()
    media = state.add_media(data, mime_type=upload.content_type or "")
    body: dict[str, object] = {
        "chat_id": chat_id,
        "caption": caption,
        field: {"file_id": media.id, "file_size": len(data)},
    }
    record = state.record(
        channel="telegram",
        account=bot_id,
        recipient=chat_id,
        text=caption or f"[{field}]",
        reply_to=None,
        body=body,
        id_prefix="",
    )
    message = {"message_id": record.seq, "chat": {"id": chat_id, "type": "private"}, "caption": caption}
    return JSONResponse({"ok": True, "result": {**message, "date": int(record.received_at)}})


def _signal(state: SimulatorState, channel: SimChannel, account: str, body: dict[str, Any]) -> JSONResponse:
    if channel == "whatsapp":
        if not isinstance(body.get("message_id"), str) or not body["message_id"]:
            return _graph_error(400, 100, "(#100) The parameter message_id is required")
        state.record_signal({"channel": channel, "account": account, **body})
        return JSONResponse({"success": True})
    recipient = body.get("recipient")
    if body.get("sender_action") not in ("mark_seen", "typing_on", "typing_off") or not isinstance(
        recipient, dict
    ):
        return _graph_error(400, 100, "(#100) sender_action must be mark_seen, typing_on or typing_off")
    state.record_signal({"channel": channel, "account": account, **body})
    return JSONResponse({"recipient_id": recipient.get("id")})


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def _apply_fault(state: SimulatorState, channel: SimChannel) -> FaultSpec | None:
    fault = state.take_fault(channel)
    if fault is not None and fault.kind == "timeout":
        await asyncio.sleep(fault.delay_s)  # the client gives up first; the send is not recorded
    return fault


def _parse_whatsapp(body: dict[str, Any], state: SimulatorState) -> tuple[str, str, str | None] | str:
    if body.get("type") == "template":
        return _parse_template(body)
    if body.get("type") in ("image", "document"):
        return _parse_media_message(body, state)
    if body.get("type") == "interactive":
        return _parse_interactive(body)
    text = body.get("text")
    if body.get("type") != "text" or not isinstance(text, dict) or not isinstance(text.get("body"), str):
        return "(#100) only type=text with text.body is simulated"
    to = body.get("to")
    if not isinstance(to, str) or not to:
        return "(#100) The parameter to is required"
    context = body.get("context")
    reply_to = context.get("message_id") if isinstance(context, dict) else None
    return to, text["body"], reply_to if isinstance(reply_to, str) else None


def _parse_media_message(body: dict[str, Any], state: SimulatorState) -> tuple[str, str, str | None] | str:
    """A picture or a document by the media id of an upload: recorded as its caption, else ``[image]``."""
    kind = str(body["type"])
    media = body.get(kind)
    to = body.get("to")
    media_id = media.get("id") if isinstance(media, dict) else None
    if not isinstance(to, str) or not isinstance(media_id, str) or state.media(media_id) is None:
        return f"(#131053) {kind}.id must name an uploaded media item"
    caption = media.get("caption") if isinstance(media, dict) else None
    if isinstance(caption, str) and len(caption) > 1024:
        return "(#100) the caption is longer than 1024 characters"
    return to, caption if isinstance(caption, str) and caption else f"[{kind}]", None


def _parse_interactive(body: dict[str, Any]) -> tuple[str, str, str | None] | str:
    """Reply buttons, a list, or a call-to-action URL button: recorded as the body text (the options stay
    in the recorded body); each checked against the Cloud API's limits."""
    interactive = body.get("interactive")
    to = body.get("to")
    text = interactive.get("body", {}).get("text") if isinstance(interactive, dict) else None
    if not isinstance(text, str) or not isinstance(to, str) or not isinstance(interactive, dict):
        return "(#100) interactive.body.text and to are required"
    if len(text) > 1024:
        return "(#131009) interactive body text longer than 1024 characters"
    action = interactive.get("action") or {}
    kind = interactive.get("type")
    if kind == "button":
        buttons = action.get("buttons")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            return "(#131009) 1 to 3 buttons are allowed"
    elif kind == "list":
        sections = action.get("sections")
        rows = (
            [r for s in sections if isinstance(s, dict) for r in s.get("rows") or []]
            if isinstance(sections, list)
            else []
        )
        if not rows or len(rows) > 10 or not isinstance(action.get("button"), str):
            return "(#131009) a list needs action.button and 1 to 10 rows"
        if any(len(str(r.get("title", ""))) > 24 for r in rows):
            return "(#131009) a list row title is longer than 24 characters"
    elif kind == "cta_url":
        params = action.get("parameters") or {}
        url, label = params.get("url"), params.get("display_text")
        if action.get("name") != "cta_url" or not isinstance(url, str) or not url.startswith("http"):
            return "(#131009) cta_url needs action.name cta_url and parameters.url"
        if not isinstance(label, str) or not 1 <= len(label) <= 20:
            return "(#131009) parameters.display_text must be 1 to 20 characters"
    else:
        return f"(#131009) interactive type {kind!r} is not simulated"
    context = body.get("context")
    reply_to = context.get("message_id") if isinstance(context, dict) else None
    return to, text, reply_to if isinstance(reply_to, str) else None


def _parse_template(body: dict[str, Any]) -> tuple[str, str, str | None] | str:
    """A template message: recorded as ``template:<name>:<language>|<body parameters>``."""
    template = body.get("template")
    to = body.get("to")
    if not isinstance(template, dict) or not isinstance(template.get("name"), str):
        return "(#132000) template.name is required"
    language = template.get("language")
    code = language.get("code") if isinstance(language, dict) else None
    if not isinstance(code, str) or not isinstance(to, str) or not to:
        return "(#132001) template.language.code and to are required"
    params: list[str] = []
    for component in template.get("components") or []:
        if isinstance(component, dict) and component.get("type") == "body":
            params += [
                str(p.get("text", "")) for p in component.get("parameters") or [] if isinstance(p, dict)
            ]
    if any(len(p) > 1024 for p in params):
        return "(#132005) a template parameter is longer than 1024 characters"
    context = body.get("context")
    reply_to = context.get("message_id") if isinstance(context, dict) else None
    return (
        to,
        f"template:{template['name']}:{code}|" + "|".join(params),
        reply_to if isinstance(reply_to, str) else None,
    )


def _parse_instagram(body: dict[str, Any]) -> tuple[str, str, str | None] | str:
    recipient = body.get("recipient")
    message = body.get("message")
    rid = recipient.get("id") if isinstance(recipient, dict) else None
    text = message.get("text") if isinstance(message, dict) else None
    if not isinstance(rid, str) or not rid:
        return "(#100) The parameter recipient is required"
    attachment = message.get("attachment") if isinstance(message, dict) else None
    if isinstance(attachment, dict):
        return _parse_instagram_template(rid, attachment)
    if not isinstance(text, str) or not text:
        return "(#100) message.text is required"
    if len(message.get("quick_replies") or []) > 13:  # type: ignore[union-attr]
        return "(#100) at most 13 quick replies are allowed"
    return rid, text, None


def _parse_instagram_template(
    recipient: str, attachment: dict[str, Any]
) -> tuple[str, str, str | None] | str:
    """A button template (text and 1 to 3 URL or postback buttons): recorded as its text."""
    payload = attachment.get("payload") or {}
    if attachment.get("type") != "template" or payload.get("template_type") != "button":
        return "(#100) only the button template is simulated"
    text, buttons = payload.get("text"), payload.get("buttons")
    if not isinstance(text, str) or not text or len(text) > 640:
        return "(#100) a button template's text must be 1 to 640 characters"
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
        return "(#100) a button template has 1 to 3 buttons"
    for button in buttons:
        if not isinstance(button, dict) or not 1 <= len(str(button.get("title", ""))) <= 20:
            return "(#100) a button title must be 1 to 20 characters"
        if button.get("type") == "web_url" and not str(button.get("url", "")).startswith("http"):
            return "(#100) a web_url button needs a url"
    return recipient, text, None


def _graph_error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    error = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "SIMULATED"}
    return JSONResponse(status_code=status, content={"error": error}, headers=headers)


def _graph_fault(fault: FaultSpec) -> JSONResponse:
    if fault.kind == "429":
        headers = {"Retry-After": str(fault.retry_after_s)}
        return _graph_error(429, 80007, "(#80007) Rate limit hit (simulated)", headers)
    if fault.kind == "400":
        return _graph_error(400, 100, "(#100) Invalid parameter (simulated)")
    return _graph_error(
        500 if fault.kind == "500" else 504, 2, "An unexpected error has occurred (simulated)"
    )


def _tg_error(code: int, description: str, retry_after: int | None = None) -> JSONResponse:
    content: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        content["parameters"] = {"retry_after": retry_after}
    return JSONResponse(status_code=code, content=content)


def _tg_fault(fault: FaultSpec) -> JSONResponse:
    if fault.kind == "429":
        return _tg_error(429, f"Too Many Requests: retry after {fault.retry_after_s}", fault.retry_after_s)
    if fault.kind == "400":
        return _tg_error(400, "Bad Request: chat not found (simulated)")
    return _tg_error(500 if fault.kind == "500" else 504, "Internal Server Error (simulated)")
