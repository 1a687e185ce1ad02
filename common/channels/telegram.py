"""Telegram Bot API webhooks: one ``Update`` per POST to ``/webhooks/telegram/{bot_id}``.

Authenticity: Telegram sends the ``secret_token`` given to ``setWebhook`` in the
``X-Telegram-Bot-Api-Secret-Token`` header (no network call to verify). The bot id in the URL is the
``ChannelConfig.external_id``; the idempotency key is ``"{bot_id}:{update_id}"`` (update ids are
per bot).

Read as a question: ``message.text`` in a private chat from a person, and ``callback_query`` taps on our
inline buttons (their ``data`` is the answer). Ignored: ``edited_message`` (an edit
of a message already answered is not a new question; answering it would reply twice to one thought),
messages from bots, group/supergroup chats (the assistant answers one-to-one only), ``channel_post``
and every other update type. Media (fetched before drafting, :func:`fetch_media`): ``photo`` (the
largest size), ``voice``, ``audio``, ``video``, ``video_note``, ``document``, each with a ``file_id``,
and its ``caption``; ``location`` and ``venue``. Recorded as unsupported: other private messages without
text (sticker, contact, poll, ...).

Media fetch: ``getFile`` ``{file_id}`` answers the ``file_path`` (and ``file_size``), downloaded from
``{api}/file/bot{token}/{file_path}``; the Bot API hands out files up to 20 MB ("file is too big").

Sending: Telegram Bot API sender: ``POST {api}/bot{token}/sendMessage`` ``{chat_id, text, reply_parameters}``.

Every answer is ``{"ok": true, "result": Message}`` or ``{"ok": false, "error_code", "description",
"parameters": {"retry_after"}}``; ``ok`` decides, not only the HTTP status. The bot token is the
connection's own (encrypted in ``channel_configs``), else ``CHANNELS__TELEGRAM_BOT_TOKEN``; it is part
of the URL, so the URL is never logged or put in
an error. ``reply_parameters`` is sent only when ``in_reply_to`` is a numeric Telegram message id.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from common.channels.base import (
    ChannelEvent,
    IgnoredEvent,
    ParsedEvent,
    RecipientConfig,
    SignalTarget,
    invalid_payload,
    media_event,
    unsupported_text,
)
from common.channels.http import HttpSender, body_json
from common.channels.media import (
    FetchedMedia,
    MediaTooLarge,
    check_declared,
    credential,
    download,
    fetch_error,
    refusal,
    request_json,
    too_large,
)
from common.config import ChannelSecrets
from common.domain import Channel, ChannelRoute, MediaRef
from common.errors import DependencyError, InvalidInput, PermanentSendError, RetryableSendError, Unauthorized
from common.schemas import OutboundAttachment, OutboundPayload

SECRET_HEADER = "x-telegram-bot-api-secret-token"  # noqa: S105 - a header name

#: Message fields that carry content we cannot read; the first present names the unsupported type.
MEDIA_FIELDS = (
    "photo",
    "sticker",
    "location",
    "venue",
    "voice",
    "video",
    "video_note",
    "audio",
    "document",
    "animation",
    "contact",
    "poll",
    "dice",
)


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class _User(_Loose):
    id: int
    is_bot: bool = False


class _Chat(_Loose):
    id: int
    type: str


class _Message(_Loose):
    message_id: int
    chat: _Chat
    sender: _User | None = Field(default=None, alias="from")
    text: str | None = None
    caption: str | None = None


class _Callback(_Loose):
    id: str
    sender: _User = Field(alias="from")
    message: dict[str, Any] | None = None
    data: str | None = None


class _Update(_Loose):
    update_id: int
    message: _Message | None = None
    edited_message: dict[str, Any] | None = None
    callback_query: _Callback | None = None


class TelegramAdapter:
    """Verifies the secret-token header and parses one Telegram ``Update``."""

    channel = Channel.TELEGRAM

    def verify(self, *, headers: Mapping[str, str], body: bytes, secret: str | None) -> None:
        """The header must equal the secret given to ``setWebhook`` (constant-time comparison)."""
        if not secret:
            raise Unauthorized("webhook secret is not configured")
        received = headers.get(SECRET_HEADER, "")
        if not received or not hmac.compare_digest(received.encode(), secret.encode()):
            raise Unauthorized("missing or wrong secret token")

    def parse(self, payload: Any, *, account_id: str | None = None) -> list[ParsedEvent]:
        """Zero or one event: Telegram sends one update per request."""
        if account_id is None:
            raise ValueError("Telegram updates are routed by the bot id in the URL")
        try:
            update = _Update.model_validate(payload)
        except ValidationError as exc:
            raise invalid_payload(exc) from exc
        if update.message is None and update.callback_query is not None:
            return [_callback_event(account_id, update.update_id, update.callback_query)]
        if update.message is None:
            kind = "edited_message" if update.edited_message is not None else _update_type(update)
            return [IgnoredEvent(reason=f"{kind} update is not handled", account_id=account_id)]
        return [_message_event(account_id, update.update_id, update.message)]


def _callback_event(bot_id: str, update_id: int, callback: _Callback) -> ParsedEvent:
    """A tap on one of our inline buttons: the button's data is the customer's answer."""
    if callback.sender.is_bot or not callback.data or not callback.data.strip():
        return IgnoredEvent(reason="callback_query without data", account_id=bot_id)
    chat = (callback.message or {}).get("chat")
    if isinstance(chat, dict) and chat.get("type") not in (None, "private"):
        return IgnoredEvent(reason=f"{chat.get('type')} chats are not answered", account_id=bot_id)
    customer = str(chat["id"]) if isinstance(chat, dict) and "id" in chat else str(callback.sender.id)
    return ChannelEvent(bot_id, customer, f"{bot_id}:{update_id}", callback.data, callback_id=callback.id)


def _update_type(update: _Update) -> str:
    extra = [k for k in (update.model_extra or {}) if k != "update_id"]
    return extra[0] if extra else "empty"


def _message_event(bot_id: str, update_id: int, message: _Message) -> ParsedEvent:
    if message.sender is None or message.sender.is_bot:
        return IgnoredEvent(reason="message not sent by a person", account_id=bot_id)
    if message.chat.type != "private":
        return IgnoredEvent(reason=f"{message.chat.type} chats are not answered", account_id=bot_id)
    key = f"{bot_id}:{update_id}"
    customer = str(message.chat.id)
    if message.text is not None and message.text.strip():
        return ChannelEvent(bot_id, customer, key, message.text)
    media = _media_of(message)
    if media is not None:
        return media_event(bot_id, customer, key, media)
    extra = message.model_extra or {}
    kind = next((f for f in MEDIA_FIELDS if f in extra), "non-text message")
    return ChannelEvent(bot_id, customer, key, unsupported_text(kind), unsupported=kind)


#: Message fields holding a file we fetch, and the media kind each is.
FILE_FIELDS = {
    "voice": "audio",
    "audio": "audio",
    "video": "video",
    "video_note": "video",
    "document": "document",
}


def _media_of(message: _Message) -> MediaRef | None:
    extra = message.model_extra or {}
    caption = message.caption
    photos = extra.get("photo")
    if isinstance(photos, list) and photos and isinstance(photos[-1], dict):
        return _file_ref(
            "image", photos[-1], caption, mime="image/jpeg"
        )  # Telegram re-encodes photos as JPEG
    for name, kind in FILE_FIELDS.items():
        body = extra.get(name)
        if isinstance(body, dict):
            return _file_ref(kind, body, caption, voice=name == "voice")
    place = extra.get("location")
    venue = extra.get("venue")
    if isinstance(venue, dict) and isinstance(venue.get("location"), dict):
        place = {**venue["location"], "name": venue.get("title"), "address": venue.get("address")}
    if isinstance(place, dict):
        details = {
            k: place[k] for k in ("latitude", "longitude", "name", "address") if place.get(k) is not None
        }
        return MediaRef(kind="location", details=details)
    return None


def _file_ref(
    kind: str, body: dict[str, Any], caption: str | None, *, voice: bool = False, mime: str | None = None
) -> MediaRef | None:
    file_id = body.get("file_id")
    if not isinstance(file_id, str) or not file_id or len(file_id) > 2048:
        return None
    size = body.get("file_size")
    name = body.get("file_name")
    mime_type = body.get("mime_type") if isinstance(body.get("mime_type"), str) else mime
    return MediaRef(
        kind=kind,
        ref=file_id,
        mime_type=mime_type[:200] if mime_type else None,
        filename=name[:300] if isinstance(name, str) and name else None,
        declared_bytes=size if isinstance(size, int) else None,
        voice=voice,
        caption=caption,
    )


async def fetch_media(
    client: httpx.AsyncClient,
    *,
    secrets: ChannelSecrets,
    route: ChannelRoute,
    media: MediaRef,
    max_bytes: int,
) -> FetchedMedia:
    """``getFile`` → ``file_path`` → the bytes; the token is in both URLs, so no error names them."""
    check_declared(media.declared_bytes, max_bytes)
    token = credential(route, "bot_token", secrets.telegram_bot_token)
    api = secrets.telegram_api_url.rstrip("/")
    response, data = await request_json(
        client, "POST", f"{api}/bot{token}/getFile", json={"file_id": media.ref}, what="Telegram getFile"
    )
    if not response.is_success or data.get("ok") is not True:
        description = str(data.get("description", ""))
        if "too big" in description:
            if media.declared_bytes:
                raise too_large(media.declared_bytes, max_bytes)
            raise MediaTooLarge("the file is over the 20 MB the Telegram Bot API hands to bots")
        code = data.get("error_code", response.status_code)
        raise refusal(
            code if isinstance(code, int) else response.status_code, "Telegram getFile", description
        )
    result = data.get("result")
    path = result.get("file_path") if isinstance(result, dict) else None
    if not isinstance(path, str) or not path:
        raise fetch_error("Telegram getFile: no file_path in the answer", retryable=False)
    check_declared(result.get("file_size") if isinstance(result, dict) else None, max_bytes)
    return await download(
        client,
        f"{api}/file/bot{token}/{path}",
        max_bytes=max_bytes,
        what="Telegram file",
        mime_type=media.mime_type,
    )


# --- Sending --------------------------------------------------------------------------------------

MAX_CHARS = 4096


def reply_to_message_id(in_reply_to: str | None) -> int | None:
    """Telegram's message id when ``in_reply_to`` is one (all digits), else None (the reply is not quoted).

    The webhook adapter keys inbound messages ``"{bot_id}:{update_id}"``: an update id is not a message id,
    so such a key is never mistaken for one.
    """
    if in_reply_to and in_reply_to.isdigit():
        return int(in_reply_to)
    return None


#: Telegram's limit on a button's ``callback_data``: 64 bytes (not characters).
CALLBACK_DATA_BYTES = 64


def _callback_data(text: str) -> str:
    """``text`` cut to 64 bytes of UTF-8 at a character boundary (more is refused: BUTTON_DATA_INVALID)."""
    return text.encode()[:CALLBACK_DATA_BYTES].decode("utf-8", "ignore")


def _keyboard(payload: OutboundPayload) -> list[list[dict[str, str]]]:
    """The inline keyboard of a last part: the options (a tap arrives as a ``callback_query`` whose data
    is the option's text) on one row when they are up to 3, one per row for more (a list); then one row
    per cited page, a URL button opening it."""
    options = [{"text": t, "callback_data": _callback_data(t)} for t in payload.quick_replies]
    rows = [options] if 0 < len(options) <= 3 else [[o] for o in options]
    return rows + [[{"text": link.title, "url": link.url}] for link in payload.links]


class TelegramSender(HttpSender):
    """Text replies through the Bot API; the first part replies to the customer's message."""

    channel: ClassVar[Channel] = Channel.TELEGRAM
    max_chars: ClassVar[int] = MAX_CHARS

    async def signal(self, target: SignalTarget, *, first: bool) -> bool:
        """``sendChatAction typing``: Telegram shows it for 5 s, so True: renew it while drafting.
        (Telegram has no read receipts for bots.)"""
        token = target.account.secret("bot_token", self._secrets.telegram_bot_token)
        if token is None:
            raise PermanentSendError("no bot token for sendChatAction")
        body = {"chat_id": target.customer_id, "action": "typing"}
        response = await self._post(
            f"{self._api()}/bot{token.get_secret_value()}/sendChatAction", json=body, headers={}
        )
        data = body_json(response)
        if not response.is_success or data.get("ok") is not True:
            raise _telegram_error(response.status_code, data)
        return True

    async def _send_attachment(
        self, payload: OutboundPayload, account: RecipientConfig, file: OutboundAttachment, data: bytes
    ) -> str:
        """``sendPhoto`` (a picture) or ``sendDocument`` (anything else), the file in a multipart form."""
        method, field = ("sendPhoto", "photo") if file.kind == "image" else ("sendDocument", "document")
        form = {"chat_id": payload.customer_id}
        if file.caption:
            form["caption"] = file.caption
        url = f"{self._api()}/bot{self._token(account).get_secret_value()}/{method}"
        response = await self._post(
            url, data=form, files={field: (file.filename, data, file.mime_type)}, headers={}
        )
        return _sent_id(response)

    def _token(self, account: RecipientConfig) -> SecretStr:
        token = account.secret("bot_token", self._secrets.telegram_bot_token)
        if token is None:
            raise PermanentSendError(
                "no bot token: the connection has none and CHANNELS__TELEGRAM_BOT_TOKEN is unset"
            )
        return token

    def _api(self) -> str:
        return self._secrets.telegram_api_url.rstrip("/")

    async def _send_part(
        self, payload: OutboundPayload, account: RecipientConfig, text: str, index: int, *, last: bool
    ) -> str:
        token = self._token(account)
        body: dict[str, Any] = {"chat_id": payload.customer_id, "text": text}
        reply_id = reply_to_message_id(payload.in_reply_to)
        if index == 0 and reply_id is not None:
            # Still answer when the customer deleted the message we reply to.
            body["reply_parameters"] = {"message_id": reply_id, "allow_sending_without_reply": True}
        if last and (payload.quick_replies or payload.links):
            body["reply_markup"] = {"inline_keyboard": _keyboard(payload)}
        url = f"{self._api()}/bot{token.get_secret_value()}/sendMessage"
        return _sent_id(await self._post(url, json=body, headers={}))


def _sent_id(response: httpx.Response) -> str:
    """The ``message_id`` of what Telegram accepted, or its classified refusal."""
    data = body_json(response)
    if response.is_success and data.get("ok") is True:
        result = data.get("result")
        if isinstance(result, dict) and "message_id" in result:
            return str(result["message_id"])
        raise PermanentSendError("telegram answered ok without a message_id")
    raise _telegram_error(response.status_code, data)


def _telegram_error(status: int, data: dict[str, Any]) -> RetryableSendError | PermanentSendError:
    code = data.get("error_code", status)
    code = code if isinstance(code, int) else status
    text = f"telegram {code}: {data.get('description', 'no description')}"
    if code == 429 or code >= 500:
        params = data.get("parameters")
        retry_after = params.get("retry_after") if isinstance(params, dict) else None
        seconds = float(retry_after) if isinstance(retry_after, int | float) else None
        return RetryableSendError(text, retry_after_s=seconds)
    return PermanentSendError(text)


async def answer_callback_query(
    client: httpx.AsyncClient, *, api_url: str, token: str, callback_id: str
) -> None:
    """Stop the spinner on a tapped inline button (Telegram shows it until this is called)."""
    await bot_api(
        client,
        api_url=api_url,
        token=token,
        method="answerCallbackQuery",
        body={"callback_query_id": callback_id},
    )


# --- Registration (the platform calls setWebhook for each connected bot) -------------------------------


def bot_id_of(token: str) -> str:
    """The bot's numeric id: the part of the token before ``:``; InvalidInput for another shape."""
    bot_id, sep, rest = token.partition(":")
    if not sep or not bot_id.isdigit() or not rest:
        raise InvalidInput("the Telegram bot token does not look like '<bot_id>:<secret>'")
    return bot_id


async def bot_api(
    client: httpx.AsyncClient, *, api_url: str, token: str, method: str, body: dict[str, Any]
) -> Any:
    """Call one Bot API method; its ``result``. The token is in the URL, so no error names the URL.

    Telegram's refusal (``ok: false``) is :class:`InvalidInput` with its description (a wrong token is
    401 there); a transport failure is :class:`DependencyError` (try again).
    """
    try:
        response = await client.post(f"{api_url.rstrip('/')}/bot{token}/{method}", json=body)
    except httpx.HTTPError as exc:
        raise DependencyError(f"Telegram Bot API unreachable ({type(exc).__name__})") from None
    data = body_json(response)
    if not response.is_success or data.get("ok") is not True:
        description = str(data.get("description", f"HTTP {response.status_code}"))[:300]
        raise InvalidInput(f"Telegram refused {method}", details={"description": description})
    return data.get("result")
