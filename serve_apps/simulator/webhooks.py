"""SIMULATED provider webhooks: payloads in the providers' formats, signed as the providers sign them.

* WhatsApp Cloud API and Instagram: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body keyed
  with the Meta app secret>``; envelopes ``{"object", "entry": [...]}`` with several entries when batched.
* Telegram: one ``Update`` per request with the ``X-Telegram-Bot-Api-Secret-Token`` header.

Builders return plain dicts so a test can batch them (:func:`batch`), fire one twice (a duplicate), add
an echo or a status update. :class:`WebhookFirer` serialises once and signs exactly the bytes it sends.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

_update_ids = itertools.count(int(time.time()) % 1_000_000 * 1000)


def sign_meta(body: bytes, app_secret: str) -> str:
    """The ``X-Hub-Signature-256`` header value for ``body``."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def whatsapp_message(
    *, sender: str, text: str, message_id: str | None = None, name: str = "Sim"
) -> dict[str, Any]:
    """One inbound text message (an item of ``value.messages``) plus its contact."""
    return {
        "contact": {"profile": {"name": name}, "wa_id": sender},
        "message": {
            "from": sender,
            "id": message_id or f"wamid.SIM{uuid.uuid4().hex}",
            "timestamp": str(int(time.time())),
            "type": "text",
            "text": {"body": text},
        },
    }


def whatsapp_media(
    *,
    sender: str,
    kind: str,
    media_id: str,
    mime_type: str,
    caption: str | None = None,
    filename: str | None = None,
    voice: bool = False,
) -> dict[str, Any]:
    """One inbound image / audio / video / document message (``voice`` marks a recorded voice note)."""
    body: dict[str, Any] = {"id": media_id, "mime_type": mime_type, "sha256": "SIMULATED"}
    if caption is not None:
        body["caption"] = caption
    if filename is not None:
        body["filename"] = filename
    if kind == "audio":
        body["voice"] = voice
    item = whatsapp_message(sender=sender, text="")
    item["message"].pop("text")
    item["message"].update({"type": kind, kind: body})
    return item


def whatsapp_button_reply(*, sender: str, button_id: str, title: str, replied_to: str) -> dict[str, Any]:
    """A tap on one of our reply buttons: an ``interactive`` ``button_reply`` quoting the message
    (``replied_to``, our message's id) that carried the buttons."""
    item = whatsapp_message(sender=sender, text="")
    item["message"].pop("text")
    item["message"].update(
        {
            "type": "interactive",
            "interactive": {"type": "button_reply", "button_reply": {"id": button_id, "title": title}},
            "context": {"from": "15550000000", "id": replied_to},
        }
    )
    return item


def whatsapp_location(*, sender: str, latitude: float, longitude: float, name: str = "") -> dict[str, Any]:
    """One inbound location message."""
    item = whatsapp_message(sender=sender, text="")
    item["message"].pop("text")
    place: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
    if name:
        place["name"] = name
    item["message"].update({"type": "location", "location": place})
    return item


def whatsapp_status(*, recipient: str, message_id: str, status: str = "delivered") -> dict[str, Any]:
    """One delivery status (an item of ``value.statuses``) for a message the brand sent."""
    return {"id": message_id, "status": status, "timestamp": str(int(time.time())), "recipient_id": recipient}


def whatsapp_update(
    *,
    phone_number_id: str,
    messages: list[dict[str, Any]] | None = None,
    statuses: list[dict[str, Any]] | None = None,
    waba_id: str = "SIM-WABA",
    display_phone_number: str = "15550000000",
) -> dict[str, Any]:
    """A WhatsApp webhook envelope with one entry and one ``messages`` change."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": display_phone_number, "phone_number_id": phone_number_id},
    }
    if messages:
        value["contacts"] = [m["contact"] for m in messages]
        value["messages"] = [m["message"] for m in messages]
    if statuses:
        value["statuses"] = statuses
    change = {"value": value, "field": "messages"}
    return {"object": "whatsapp_business_account", "entry": [{"id": waba_id, "changes": [change]}]}


def instagram_message(*, ig_id: str, sender: str, text: str, mid: str | None = None) -> dict[str, Any]:
    """One inbound Instagram DM event (an item of ``entry.messaging``)."""
    return {
        "sender": {"id": sender},
        "recipient": {"id": ig_id},
        "timestamp": int(time.time() * 1000),
        "message": {"mid": mid or f"mid.SIM{uuid.uuid4().hex}", "text": text},
    }


def instagram_attachment(
    *, ig_id: str, sender: str, kind: str, url: str, text: str | None = None
) -> dict[str, Any]:
    """One inbound Instagram DM with an attachment (``image``, ``video``, ``audio``, ``file``...)."""
    event = instagram_message(ig_id=ig_id, sender=sender, text="")
    event["message"].pop("text")
    if text is not None:
        event["message"]["text"] = text
    event["message"]["attachments"] = [{"type": kind, "payload": {"url": url}}]
    return event


def instagram_echo(*, ig_id: str, recipient: str, text: str) -> dict[str, Any]:
    """The echo Instagram sends back for a message the brand itself sent (must be ignored)."""
    event = instagram_message(ig_id=ig_id, sender=ig_id, text=text)
    event["recipient"] = {"id": recipient}
    event["message"]["is_echo"] = True
    return event


def instagram_update(*, ig_id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """An Instagram webhook envelope with one entry carrying ``events``."""
    entry = {"id": ig_id, "time": int(time.time() * 1000), "messaging": events}
    return {"object": "instagram", "entry": [entry]}


def batch(*envelopes: dict[str, Any]) -> dict[str, Any]:
    """One Meta envelope with the entries of several (providers batch entries under load)."""
    if not envelopes or len({e["object"] for e in envelopes}) != 1:
        raise ValueError("batch needs envelopes of one object type")
    return {"object": envelopes[0]["object"], "entry": [e for env in envelopes for e in env["entry"]]}


def telegram_update(
    *, chat_id: int, text: str, message_id: int | None = None, first_name: str = "Sim"
) -> dict[str, Any]:
    """A Telegram ``Update`` with a private text message."""
    update_id = next(_update_ids)
    return {
        "update_id": update_id,
        "message": {
            "message_id": message_id if message_id is not None else update_id % 1_000_000,
            "from": {"id": chat_id, "is_bot": False, "first_name": first_name},
            "chat": {"id": chat_id, "type": "private", "first_name": first_name},
            "date": int(time.time()),
            "text": text,
        },
    }


def telegram_media_update(
    *,
    chat_id: int,
    field: str,
    file_id: str,
    file_size: int | None = None,
    mime_type: str | None = None,
    caption: str | None = None,
    file_name: str | None = None,
) -> dict[str, Any]:
    """A Telegram ``Update`` with a private media message: ``field`` is ``photo``, ``voice``, ``audio``,
    ``video``, ``document``..."""
    update = telegram_update(chat_id=chat_id, text="")
    message = update["message"]
    message.pop("text")
    body: dict[str, Any] = {"file_id": file_id, "file_unique_id": file_id[:16]}
    if file_size is not None:
        body["file_size"] = file_size
    if mime_type is not None:
        body["mime_type"] = mime_type
    if file_name is not None:
        body["file_name"] = file_name
    if field == "voice":
        body["duration"] = 3
    message[field] = [{**body, "width": 800, "height": 600}] if field == "photo" else body
    if caption is not None:
        message["caption"] = caption
    return update


def telegram_callback(*, chat_id: int, data: str, message_id: int = 1) -> dict[str, Any]:
    """A Telegram ``Update`` with a tap on one of our inline buttons (``callback_query``)."""
    return {
        "update_id": next(_update_ids),
        "callback_query": {
            "id": str(uuid.uuid4().int)[:19],
            "from": {"id": chat_id, "is_bot": False, "first_name": "Sim"},
            "message": {
                "message_id": message_id,
                "chat": {"id": chat_id, "type": "private"},
                "date": int(time.time()),
            },
            "chat_instance": "SIMULATED",
            "data": data,
        },
    }


@dataclass(frozen=True)
class WebhookPaths:
    """Where the gateway receives each provider's webhooks."""

    whatsapp: str = "/webhooks/whatsapp"
    instagram: str = "/webhooks/instagram"
    telegram: str = "/webhooks/telegram/{bot_id}"


class WebhookFirer:
    """POSTs signed webhooks at a gateway, as the providers would."""

    def __init__(
        self,
        gateway_url: str,
        *,
        meta_app_secret: str | None = None,
        telegram_secret_token: str | None = None,
        paths: WebhookPaths | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(base_url=gateway_url, transport=transport, timeout=30.0)
        self._meta_secret = meta_app_secret
        self._telegram_secret = telegram_secret_token
        self._paths = paths or WebhookPaths()

    async def whatsapp(self, envelope: dict[str, Any]) -> httpx.Response:
        """Fire a WhatsApp envelope with a valid ``X-Hub-Signature-256``."""
        return await self._meta(self._paths.whatsapp, envelope)

    async def instagram(self, envelope: dict[str, Any]) -> httpx.Response:
        """Fire an Instagram envelope with a valid ``X-Hub-Signature-256``."""
        return await self._meta(self._paths.instagram, envelope)

    async def telegram(self, update: dict[str, Any], *, bot_id: str) -> httpx.Response:
        """Fire a Telegram update with the secret-token header (``bot_id`` fills the path template)."""
        if self._telegram_secret is None:
            raise ValueError("telegram_secret_token is needed to fire Telegram webhooks")
        headers = {
            "X-Telegram-Bot-Api-Secret-Token": self._telegram_secret,
            "content-type": "application/json",
        }
        path = self._paths.telegram.format(bot_id=bot_id)
        return await self._client.post(path, content=_dump(update), headers=headers)

    async def _meta(self, path: str, envelope: dict[str, Any]) -> httpx.Response:
        if self._meta_secret is None:
            raise ValueError("meta_app_secret is needed to sign Meta webhooks")
        body = _dump(envelope)
        headers = {
            "X-Hub-Signature-256": sign_meta(body, self._meta_secret),
            "content-type": "application/json",
        }
        return await self._client.post(path, content=body, headers=headers)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


def _dump(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
