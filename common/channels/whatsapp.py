"""WhatsApp (Cloud API): webhooks in, text replies out.

Webhooks (``object: whatsapp_business_account``).

Shape: ``entry[].changes[].value`` with ``metadata.phone_number_id`` (the brand's number: the
``ChannelConfig.external_id``), ``messages[]`` (customer messages) and ``statuses[]`` (delivery receipts
of our own sends). Every entry and every change is read; Meta batches several per POST.

Read as a question: ``text``, and the titles of ``interactive`` (button/list reply) and ``button``
(template quick reply) taps. Receipts: ``statuses`` (sent/delivered/read/failed with ``errors``) update
the delivery of the brand's message. Ignored: ``reaction``.
Media (fetched before drafting, see :func:`fetch_media`): ``image``, ``audio`` (``voice: true`` for a voice
note), ``video``, ``document`` (with ``filename``), each with its ``id``, ``mime_type`` and optional
``caption``; ``location`` (``latitude``, ``longitude``, ``name``, ``address``). Recorded as unsupported:
every other type (sticker, contacts, ...).

Sending: ``POST {graph}/{version}/{phone_number_id}/messages`` (text, contextual reply).

Media fetch: ``GET {graph}/{version}/{media_id}`` with the access token answers ``{url, mime_type, sha256,
file_size, id}``; the ``url`` (valid for minutes) is then downloaded with the same bearer token.

The phone number id is the brand's ``channel_configs.external_id``; the access token is the connection's
own (encrypted), else ``CHANNELS__META_ACCESS_TOKEN``. Success body: ``{"messaging_product",
"contacts", "messages": [{"id"}]}``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import httpx
from pydantic import Field

from common.channels.base import (
    ChannelEvent,
    IgnoredEvent,
    ParsedEvent,
    RecipientConfig,
    SignalTarget,
    StatusEvent,
    media_event,
    sent_at,
    stamped,
    unsupported_text,
)
from common.channels.http import body_json
from common.channels.media import (
    FetchedMedia,
    check_declared,
    credential,
    download,
    fetch_error,
    refusal,
    request_json,
)
from common.channels.meta import GraphSender, Loose, MetaAdapter, MetaEnvelope
from common.config import ChannelSecrets
from common.domain import Channel, ChannelRoute, MediaRef
from common.errors import DependencyError, InvalidInput, PermanentSendError
from common.schemas import OutboundAttachment, OutboundPayload


class _Metadata(Loose):
    phone_number_id: str = Field(min_length=1)


class _Message(Loose):
    id: str = Field(min_length=1, max_length=256)
    sender: str = Field(alias="from", min_length=1, max_length=256)
    type: str
    timestamp: str | int | None = None
    text: dict[str, Any] | None = None
    interactive: dict[str, Any] | None = None
    button: dict[str, Any] | None = None
    image: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    video: dict[str, Any] | None = None
    document: dict[str, Any] | None = None
    location: dict[str, Any] | None = None


class _Value(Loose):
    metadata: _Metadata | None = None
    messages: list[_Message] = Field(default_factory=list)
    statuses: list[dict[str, Any]] = Field(default_factory=list)


class _Change(Loose):
    field: str
    value: _Value


class _Entry(Loose):
    id: str
    changes: list[_Change] = Field(default_factory=list)


class _Payload(MetaEnvelope):
    entry: list[_Entry]


class WhatsAppAdapter(MetaAdapter[_Payload]):
    """Verifies (app-secret HMAC) and parses WhatsApp Cloud API webhooks."""

    channel = Channel.WHATSAPP
    object_name = "whatsapp_business_account"
    envelope = _Payload

    def events(self, envelope: _Payload) -> list[ParsedEvent]:
        """One event per message and per status, across all entries and changes."""
        events: list[ParsedEvent] = []
        for entry in envelope.entry:
            for change in entry.changes:
                events.extend(_change_events(change))
        return events


def _change_events(change: _Change) -> list[ParsedEvent]:
    value = change.value
    if change.field != "messages" or value.metadata is None:
        return [IgnoredEvent(reason=f"change field {change.field!r} is not handled")]
    number = value.metadata.phone_number_id
    events: list[ParsedEvent] = [_status_event(number, s) for s in value.statuses]
    for message in value.messages:
        events.append(stamped(_message_event(number, message), sent_at(message.timestamp)))
    return events


#: Receipts the Cloud API sends for a message we sent.
RECEIPTS = frozenset({"sent", "delivered", "read", "failed"})


def _status_event(number: str, status: dict[str, Any]) -> ParsedEvent:
    """A receipt for one of our messages (the provider's error code and reason when it failed)."""
    kind, message_id = status.get("status"), status.get("id")
    if kind not in RECEIPTS or not isinstance(message_id, str) or not message_id:
        return IgnoredEvent(reason=f"status {kind!r} of our own message", account_id=number)
    error = None
    errors = status.get("errors")
    if kind == "failed" and isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        details = (
            (first.get("error_data") or {}).get("details")
            if isinstance(first.get("error_data"), dict)
            else None
        )
        error = f"{first.get('code', '?')}: {first.get('title') or first.get('message') or ''}".strip()
        if details:
            error = f"{error} ({details})"
        error = error[:500]
    return StatusEvent(account_id=number, provider_message_id=message_id, status=str(kind), error=error)


def _message_event(number: str, message: _Message) -> ParsedEvent:
    if message.type == "reaction":
        return IgnoredEvent(reason="reaction", account_id=number)
    media = _media_of(message)
    if media is not None:
        return media_event(number, message.sender, message.id, media)
    text = _text_of(message)
    if text is None:
        return ChannelEvent(
            account_id=number,
            customer_id=message.sender,
            message_id=message.id,
            text=unsupported_text(message.type),
            unsupported=message.type,
        )
    if not text.strip():
        return IgnoredEvent(reason="empty text", account_id=number)
    return ChannelEvent(account_id=number, customer_id=message.sender, message_id=message.id, text=text)


def _media_of(message: _Message) -> MediaRef | None:
    """The picture, voice note, video, file or location a message carries, or None."""
    if message.type == "location" and message.location is not None:
        place = message.location
        details = {
            k: place[k] for k in ("latitude", "longitude", "name", "address") if place.get(k) is not None
        }
        return MediaRef(kind="location", details=details)
    if message.type not in ("image", "audio", "video", "document"):
        return None
    body = getattr(message, message.type)
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"]:
        return None
    return MediaRef(
        kind=message.type,
        ref=body["id"],
        mime_type=_short(body.get("mime_type"), 200),
        filename=_short(body.get("filename"), 300),
        voice=body.get("voice") is True,
        caption=body.get("caption") if isinstance(body.get("caption"), str) else None,
    )


def _short(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


async def fetch_media(
    client: httpx.AsyncClient,
    *,
    secrets: ChannelSecrets,
    route: ChannelRoute,
    media: MediaRef,
    max_bytes: int,
) -> FetchedMedia:
    """Media id → its short-lived URL (and declared size) → the bytes, both with the access token."""
    token = credential(route, "access_token", secrets.meta_access_token)
    headers = {"Authorization": f"Bearer {token}"}
    graph = secrets.meta_graph_url.rstrip("/")
    response, info = await request_json(
        client,
        "GET",
        f"{graph}/{secrets.meta_graph_version}/{media.ref}",
        headers=headers,
        what="WhatsApp media",
    )
    if not response.is_success:
        error = info.get("error")
        detail = str(error.get("message", "")) if isinstance(error, dict) else ""
        raise refusal(response.status_code, "WhatsApp media", detail)
    url = info.get("url")
    if not isinstance(url, str) or not url:
        raise fetch_error("WhatsApp media: the answer has no url", retryable=False)
    check_declared(info.get("file_size"), max_bytes)  # a string in Graph's answer
    mime = info.get("mime_type") if isinstance(info.get("mime_type"), str) else media.mime_type
    return await download(
        client, url, max_bytes=max_bytes, headers=headers, what="WhatsApp media", mime_type=mime
    )


#: The most template pages read in one sync (100 templates a page).
TEMPLATE_PAGES = 20
_PARAMETER = re.compile(r"\{\{\s*(\d+|[a-z_][a-z0-9_]*)\s*\}\}")


async def list_templates(
    client: httpx.AsyncClient, *, graph_url: str, version: str, waba_id: str, token: str
) -> list[dict[str, Any]]:
    """The business account's message templates: ``GET /{waba_id}/message_templates``, every page.

    Each as ``{name, language, status, category, body_parameters}`` (the number of ``{{n}}`` placeholders
    in its BODY). Graph's refusal is :class:`InvalidInput` with its message; a transport failure is
    :class:`DependencyError`. No error names the token.
    """
    url: str | None = f"{graph_url.rstrip('/')}/{version}/{waba_id}/message_templates"
    params: dict[str, Any] | None = {"fields": "name,language,status,category,components", "limit": 100}
    found: list[dict[str, Any]] = []
    for _ in range(TEMPLATE_PAGES):
        if url is None:
            break
        try:
            response = await client.get(url, params=params, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise DependencyError(f"WhatsApp Graph API unreachable ({type(exc).__name__})") from None
        data = body_json(response)
        if not response.is_success:
            error = data.get("error")
            message = str(error.get("message", "")) if isinstance(error, dict) else ""
            raise InvalidInput(
                "WhatsApp refused the template list",
                details={"status": response.status_code, "message": message[:300]},
            )
        for item in data.get("data") or []:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                found.append(_template(item))
        paging = data.get("paging")
        following = paging.get("next") if isinstance(paging, dict) else None
        url, params = (following, None) if isinstance(following, str) and following else (None, None)
    return found


def _template(item: dict[str, Any]) -> dict[str, Any]:
    body = next(
        (c for c in item.get("components") or [] if isinstance(c, dict) and c.get("type") == "BODY"), {}
    )
    placeholders = {m.group(1) for m in _PARAMETER.finditer(str(body.get("text", "")))}
    return {
        "name": item["name"],
        "language": str(item.get("language", "")),
        "status": str(item.get("status", "")).upper(),
        "category": str(item.get("category", "")),
        "body_parameters": len(placeholders),
    }


def _text_of(message: _Message) -> str | None:
    """The readable text of a message, or None for a type we do not read."""
    if message.type == "text" and message.text is not None:
        return str(message.text.get("body", ""))
    if message.type == "interactive" and message.interactive is not None:
        reply = message.interactive.get("button_reply") or message.interactive.get("list_reply") or {}
        return str(reply.get("title", "")) if isinstance(reply, dict) else None
    if message.type == "button" and message.button is not None:
        return str(message.button.get("text", ""))
    return None


# --- Sending --------------------------------------------------------------------------------------

MAX_CHARS = 4096
#: An interactive message's body holds 1024 characters: a longer last part goes without buttons.
BUTTON_BODY_MAX = 1024
#: A template body parameter is at most 1024 characters: a reply sent as one is split to that.
TEMPLATE_MAX_CHARS = 1024


#: Interactive limits: 3 reply buttons (titles 20 characters), 10 list rows (titles 24), a URL
#: button's label 20.
MAX_BUTTONS = 3
MAX_ROWS = 10


def _interactive(payload: OutboundPayload, text: str) -> dict[str, Any]:
    """The ``interactive`` object of a last part: reply buttons for up to 3 options, a list for more
    (a tap on either comes back as its title), else a call-to-action button opening the first cited
    page (WhatsApp has one URL button per message; options win over links)."""
    options = payload.quick_replies
    if 0 < len(options) <= MAX_BUTTONS:
        buttons = [
            {"type": "reply", "reply": {"id": f"qr{i}", "title": t[:20]}} for i, t in enumerate(options)
        ]
        return {"type": "button", "body": {"text": text}, "action": {"buttons": buttons}}
    if options:
        rows = [{"id": f"qr{i}", "title": t[:24]} for i, t in enumerate(options[:MAX_ROWS])]
        return {
            "type": "list",
            "body": {"text": text},
            "action": {"button": "Choose", "sections": [{"title": "Options", "rows": rows}]},
        }
    link = payload.links[0]
    return {
        "type": "cta_url",
        "body": {"text": text},
        "action": {"name": "cta_url", "parameters": {"display_text": link.title[:20], "url": link.url}},
    }


class WhatsAppSender(GraphSender):
    """Text replies through the WhatsApp Cloud API; the first part quotes the customer's message."""

    channel: ClassVar[Channel] = Channel.WHATSAPP
    max_chars: ClassVar[int] = MAX_CHARS

    async def signal(self, target: SignalTarget, *, first: bool) -> bool:
        """Mark the customer's message read and show the typing indicator (one call; WhatsApp shows it
        for up to 25 s or until the reply). False: nothing to renew."""
        if first:
            body = {
                "messaging_product": "whatsapp",
                "status": "read",
                "message_id": target.message_id,
                "typing_indicator": {"type": "text"},
            }
            await self._post_message(target.account, body)
        return False

    async def _send_attachment(
        self, payload: OutboundPayload, account: RecipientConfig, file: OutboundAttachment, data: bytes
    ) -> str:
        """Upload the file (``POST /{phone_number_id}/media``, multipart) and send it by its media id as an
        ``image`` or ``document`` message with the caption (documents keep their file name)."""
        uploaded = await self._graph_post(
            account,
            "media",
            data={"messaging_product": "whatsapp", "type": file.mime_type},
            files={"file": (file.filename, data, file.mime_type)},
        )
        media_id = uploaded.get("id")
        if not isinstance(media_id, str) or not media_id:
            raise PermanentSendError("whatsapp accepted the upload but returned no media id")
        media: dict[str, Any] = {"id": media_id}
        if file.caption:
            media["caption"] = file.caption
        if file.kind == "document":
            media["filename"] = file.filename
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": payload.customer_id,
            "type": file.kind,
            file.kind: media,
        }
        return _message_id(await self._post_message(account, body))

    def part_limit(self, account: RecipientConfig) -> int:
        """A template's body parameter holds 1024 characters (less the fixed text around the reply in
        it); a free-form text 4096."""
        return account.template_reply_room(TEMPLATE_MAX_CHARS) if account.window == "template" else MAX_CHARS

    async def _send_part(
        self, payload: OutboundPayload, account: RecipientConfig, text: str, index: int, *, last: bool
    ) -> str:
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": payload.customer_id,
            "type": "text",
            "text": {"body": text, "preview_url": False},
        }
        if account.window == "template" and account.template is not None:
            # Outside the 24-hour window only an approved template may go; the reply is in its parameters.
            body.pop("text")
            body["type"] = "template"
            values = account.template_parameters(text)
            body["template"] = {
                "name": account.template["name"],
                "language": {"code": account.template["language"]},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": v} for v in values]}],
            }
        interactive = last and account.window == "open" and len(text) <= BUTTON_BODY_MAX
        if interactive and (payload.quick_replies or payload.links):
            # Interactive messages exist only inside the window (a template carries no buttons).
            body.pop("text")
            body["type"] = "interactive"
            body["interactive"] = _interactive(payload, text)
        if index == 0 and payload.in_reply_to:
            body["context"] = {"message_id": payload.in_reply_to}
        return _message_id(await self._post_message(account, body))


def _message_id(answer: dict[str, Any]) -> str:
    """The id of the message the Cloud API accepted."""
    messages = answer.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[0], dict) and messages[0].get("id"):
        return str(messages[0]["id"])
    raise PermanentSendError("whatsapp accepted the request but returned no message id")
