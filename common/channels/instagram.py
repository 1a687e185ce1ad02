"""Instagram Messaging: webhooks in, text replies out.

Webhooks (``object: instagram``).

Shape: ``entry[].messaging[]``; each item has ``sender.id`` (the customer's IGSID), ``recipient.id``
(the brand's Instagram account: the ``ChannelConfig.external_id``) and one of ``message``, ``reaction``,
``read``, ``postback``... Every entry and every messaging item is read.

Read as a question: ``message.text``. Receipts: ``read`` (``read.mid``: the brand's message the customer
has read up to) updates that message's delivery. Ignored: ``message.is_echo`` (our own sends, echoed
back: answering them would loop), ``message.is_deleted`` (the customer unsent it), ``reaction``, ``postback``
and any other event. Media (fetched before drafting, :func:`fetch_media`): ``attachments`` of type
``image``, ``video``, ``audio`` (a voice message) and ``file``, each with ``payload.url`` (a CDN URL that
needs no token; it comes in a webhook signed with the app secret); text sent with it is its caption.
Recorded as unsupported: the other attachment types (share, story_mention, reel...).

Sending: ``POST {graph}/{version}/{ig_id}/messages`` with ``{recipient, message}``.

The Instagram professional account id is the brand's ``channel_configs.external_id``; the customer id is
the Instagram-scoped id (IGSID) the webhook delivered. Success body: ``{"recipient_id", "message_id"}``.
Instagram text messages are limited to 1000 characters.
"""

from __future__ import annotations

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
from common.channels.media import FetchedMedia, download
from common.channels.meta import GraphSender, Loose, MetaAdapter, MetaEnvelope
from common.config import ChannelSecrets
from common.domain import Channel, ChannelRoute, MediaRef
from common.errors import PermanentSendError
from common.schemas import OutboundPayload


class _Party(Loose):
    id: str = Field(min_length=1, max_length=256)


class _Message(Loose):
    mid: str = Field(min_length=1, max_length=256)
    text: str | None = None
    is_echo: bool = False
    is_deleted: bool = False
    attachments: list[dict[str, Any]] = Field(default_factory=list)


class _Messaging(Loose):
    sender: _Party
    recipient: _Party
    message: _Message | None = None
    reaction: dict[str, Any] | None = None
    read: dict[str, Any] | None = None
    timestamp: int | str | None = None  # milliseconds


class _Entry(Loose):
    id: str
    messaging: list[_Messaging] = Field(default_factory=list)


class _Payload(MetaEnvelope):
    entry: list[_Entry]


class InstagramAdapter(MetaAdapter[_Payload]):
    """Verifies (app-secret HMAC) and parses Instagram Messaging webhooks."""

    channel = Channel.INSTAGRAM
    object_name = "instagram"
    envelope = _Payload

    def events(self, envelope: _Payload) -> list[ParsedEvent]:
        """One event per messaging item, across all entries."""
        return [
            stamped(_event(entry, item), sent_at(item.timestamp, millis=True))
            for entry in envelope.entry
            for item in entry.messaging
        ]


def _event(entry: _Entry, item: _Messaging) -> ParsedEvent:
    account = entry.id
    message = item.message
    mid = item.read.get("mid") if item.read is not None else None
    if isinstance(mid, str) and mid:
        # The customer read the brand's messages up to this one: a receipt, applied like WhatsApp's.
        return StatusEvent(account_id=item.recipient.id, provider_message_id=mid, status="read")
    if message is None:
        kind = "reaction" if item.reaction is not None else "non-message event"
        return IgnoredEvent(reason=kind, account_id=account)
    if message.is_echo:
        return IgnoredEvent(reason="echo of our own message", account_id=account)
    if message.is_deleted:
        return IgnoredEvent(reason="message deleted by the customer", account_id=account)
    # For a customer message the recipient is the brand's account (entry.id names the same account).
    account = item.recipient.id
    media = _media_of(message)
    if media is not None:
        return media_event(account, item.sender.id, message.mid, media)
    if message.text is not None and message.text.strip():
        return ChannelEvent(account, item.sender.id, message.mid, message.text)
    if message.attachments:
        kind = str(message.attachments[0].get("type") or "attachment")
        return ChannelEvent(account, item.sender.id, message.mid, unsupported_text(kind), unsupported=kind)
    return IgnoredEvent(reason="empty message", account_id=account)


#: Attachment types whose file we fetch, and the media kind each is.
MEDIA_TYPES = {"image": "image", "video": "video", "audio": "audio", "file": "document"}


def _media_of(message: _Message) -> MediaRef | None:
    first = message.attachments[0] if message.attachments else None
    if not isinstance(first, dict) or first.get("type") not in MEDIA_TYPES:
        return None
    payload = first.get("payload")
    url = payload.get("url") if isinstance(payload, dict) else None
    if not isinstance(url, str) or not url.startswith(("https://", "http://")) or len(url) > 2048:
        return None
    kind = MEDIA_TYPES[str(first["type"])]
    # Instagram's audio attachments are the voice messages recorded in the app.
    return MediaRef(kind=kind, ref=url, voice=kind == "audio", caption=message.text)


async def fetch_media(
    client: httpx.AsyncClient,
    *,
    secrets: ChannelSecrets,
    route: ChannelRoute,
    media: MediaRef,
    max_bytes: int,
) -> FetchedMedia:
    """The attachment's CDN URL, downloaded (no token: the URL itself is the capability)."""
    return await download(client, media.ref, max_bytes=max_bytes, what="Instagram attachment")


# --- Sending --------------------------------------------------------------------------------------

MAX_CHARS = 1000
#: A button template's text holds 640 characters: a longer last part goes without link buttons.
BUTTON_TEXT_MAX = 640
MAX_QUICK_REPLIES = 13


class InstagramSender(GraphSender):
    """Text replies through the Instagram messaging API (Graph)."""

    channel: ClassVar[Channel] = Channel.INSTAGRAM
    max_chars: ClassVar[int] = MAX_CHARS

    async def signal(self, target: SignalTarget, *, first: bool) -> bool:
        """``sender_action``: ``mark_seen`` once, then ``typing_on`` (Instagram shows it about 20 s).
        False: nothing to renew."""
        for action in ("mark_seen", "typing_on") if first else ():
            await self._post_message(
                target.account, {"recipient": {"id": target.customer_id}, "sender_action": action}
            )
        return False

    async def _send_part(
        self, payload: OutboundPayload, account: RecipientConfig, text: str, index: int, *, last: bool
    ) -> str:
        body: dict[str, Any] = {"recipient": {"id": payload.customer_id}, "message": {"text": text}}
        if payload.quick_replies and last:
            # Quick replies (up to 13) under the last part; a tap arrives as a message with the title as
            # its text.
            body["message"]["quick_replies"] = [
                {"content_type": "text", "title": title[:20], "payload": title}
                for title in payload.quick_replies[:MAX_QUICK_REPLIES]
            ]
        elif payload.links and last and len(text) <= BUTTON_TEXT_MAX:
            # The cited pages as URL buttons (a button template: up to 3, text up to 640 characters).
            buttons = [
                {"type": "web_url", "url": link.url, "title": link.title[:20]} for link in payload.links
            ]
            body["message"] = {
                "attachment": {
                    "type": "template",
                    "payload": {"template_type": "button", "text": text, "buttons": buttons[:3]},
                }
            }
        if account.window == "human_agent":
            # A person's reply after 24 hours (up to 7 days): allowed with Meta's HUMAN_AGENT tag.
            body["messaging_type"] = "MESSAGE_TAG"
            body["tag"] = "HUMAN_AGENT"
        answer = await self._post_message(account, body)
        message_id = answer.get("message_id")
        if not message_id:
            raise PermanentSendError("instagram accepted the request but returned no message_id")
        return str(message_id)
