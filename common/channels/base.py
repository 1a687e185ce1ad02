"""What every channel adapter does: verify a raw webhook body, then parse it into events.

An adapter is stateless (no per-request state on the object) and does no I/O: the route reads the raw
body once, asks the adapter to verify it, parses JSON, asks the adapter for events, and only then touches
the database. Tenant and brand resolution happen in the route, from ``ChannelConfig`` rows keyed by each
event's ``account_id``.

The sender contract: one provider send API behind one small Protocol.

A :class:`Sender` delivers one :class:`common.schemas.OutboundPayload` from the brand's account
(:class:`RecipientConfig`, taken from its ``channel_configs`` row) to the customer. Long texts are split
into the channel's parts (:mod:`common.channels.splitting`) and sent in order; ``start_part`` lets a retry
resume after the parts that already went out.

Failures are typed so the dispatcher can decide without knowing the provider::

    AssistantError (common.errors)
    └── SendError
        ├── RetryableSendError   429, 5xx, timeouts, connection errors (Retry-After in ``retry_after_s``)
        └── PermanentSendError   4xx other than 429, bad configuration: retrying cannot help

Both carry ``parts_sent`` (absolute index of the first part not delivered) and the provider ids of the
parts that were delivered before the failure.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import SecretStr, ValidationError

from common.domain import Channel, MediaRef
from common.errors import InvalidInput
from common.schemas import OutboundPayload


@dataclass(frozen=True, slots=True)
class ChannelEvent:
    """A customer message to record: the normalised fields before the brand is known.

    ``unsupported`` names the type (``sticker``, ``contacts``, ...) when ``text`` is only a placeholder;
    ``media`` is a picture, voice note, video, file or location to fetch, and ``text`` is then its
    caption or :func:`media_placeholder`.
    """

    account_id: str
    customer_id: str
    message_id: str
    text: str
    unsupported: str | None = None
    media: MediaRef | None = None
    #: Telegram's ``callback_query`` id of a button tap: answered so the button's spinner stops.
    callback_id: str | None = None
    #: When the customer sent it, by the provider's clock: a customer-service window starts there, not
    #: when a (possibly retried, hours-late) webhook reached us.
    sent_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class IgnoredEvent:
    """Something the provider sent that is deliberately not recorded, and why."""

    reason: str
    account_id: str | None = None


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A provider's receipt for a message the brand sent: ``sent``, ``delivered``, ``read`` or ``failed``
    (``error``: the provider's code and reason)."""

    account_id: str
    provider_message_id: str
    status: str
    error: str | None = None


ParsedEvent = ChannelEvent | IgnoredEvent | StatusEvent


class ChannelAdapter(Protocol):
    """One provider's webhook dialect."""

    channel: Channel

    def verify(self, *, headers: Mapping[str, str], body: bytes, secret: str | None) -> None:
        """Raise :class:`common.errors.Unauthorized` unless ``body`` provably comes from the provider."""
        ...

    def parse(self, payload: Any, *, account_id: str | None = None) -> list[ParsedEvent]:
        """Every event in a decoded payload, in delivery order; raise InvalidInput on a bad shape.

        ``account_id`` is the provider account named by the URL (Telegram's bot id), else None.
        """
        ...


def sent_at(value: object, *, millis: bool = False) -> datetime | None:
    """A provider's Unix timestamp (seconds, or ``millis``) as a UTC time; None when missing or absurd."""
    try:
        seconds = int(str(value)) / (1000 if millis else 1)
        return datetime.fromtimestamp(seconds, UTC) if seconds > 0 else None
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def stamped(event: ParsedEvent, when: datetime | None) -> ParsedEvent:
    """``event`` with the provider's ``sent_at`` when it is a customer message."""
    return dataclasses.replace(event, sent_at=when) if isinstance(event, ChannelEvent) and when else event


def media_event(account_id: str, customer_id: str, message_id: str, media: MediaRef) -> ChannelEvent:
    """A media message: its caption is the text, else a placeholder naming what it is."""
    caption = (media.caption or "").strip()
    return ChannelEvent(account_id, customer_id, message_id, caption or media_placeholder(media), media=media)


def media_placeholder(media: MediaRef) -> str:
    """The logged text of a media message without a caption: ``[voice note]``, ``[document: a.pdf]``..."""
    if media.kind == "location":
        where = ", ".join(
            str(media.details[k])
            for k in ("latitude", "longitude", "name", "address")
            if media.details.get(k)
        )
        return f"[location: {where}]" if where else "[location]"
    label = "voice note" if media.voice else media.kind
    return f"[{label}: {media.filename}]" if media.filename else f"[{label}]"


def unsupported_text(kind: str) -> str:
    """Placeholder text recorded for a message type we cannot read (image, sticker, location...)."""
    return f"[unsupported: {kind}]"


def invalid_payload(exc: ValidationError) -> InvalidInput:
    """A provider payload that does not have the documented shape, as a 400 with the field errors."""
    errors = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return InvalidInput("webhook payload failed validation", details={"errors": errors[:20]})


#: Where the reply goes in a window template's body parameters (:mod:`common.delivery.window`).
REPLY_PLACEHOLDER = "{reply}"


@dataclass(frozen=True)
class RecipientConfig:
    """The brand's account a reply is sent from (WhatsApp phone number id, Instagram account id, bot id).

    ``credentials`` are the connection's own (decrypted, :class:`SecretStr`); None → the deployment's
    ``CHANNELS__*`` defaults.
    """

    channel: Channel
    external_id: str
    settings: dict[str, Any] = field(default_factory=dict)
    credentials: dict[str, SecretStr] | None = None
    #: How the provider's window lets this reply go (:mod:`common.delivery.window`): ``open`` (free
    #: form), ``template`` (WhatsApp, as ``template`` = ``{name, language, parameters}``), ``human_agent``
    #: (Instagram).
    window: str = "open"
    template: dict[str, Any] | None = None

    def _template_parameters(self) -> list[str]:
        """The window template's body parameters as configured (a stored one without: the reply only)."""
        return [str(p) for p in (self.template or {}).get("parameters") or [REPLY_PLACEHOLDER]]

    def template_parameters(self, reply: str) -> list[str]:
        """The window template's body parameters with ``reply`` in its place."""
        return [p.replace(REPLY_PLACEHOLDER, reply) for p in self._template_parameters()]

    def template_reply_room(self, limit: int) -> int:
        """How much of a reply fits the template parameter that holds it (``limit`` a parameter)."""
        params = self._template_parameters()
        holder = next((p for p in params if REPLY_PLACEHOLDER in p), REPLY_PLACEHOLDER)
        return max(1, limit - (len(holder) - len(REPLY_PLACEHOLDER)))

    def secret(self, name: str, default: SecretStr | None) -> SecretStr | None:
        """The connection's own secret ``name``, else ``default`` (only when it has no credentials at all:
        a connection with its own credentials never falls back to the deployment's)."""
        if self.credentials is None:
            return default
        return self.credentials.get(name)


@dataclass(frozen=True)
class SendResult:
    """What the provider accepted: the id of the first part and of every part, in order."""

    provider_message_id: str
    provider_message_ids: tuple[str, ...] = ()
    parts: int = 1


@dataclass(frozen=True, slots=True)
class SignalTarget:
    """Whom a read / typing signal is for: the brand's account (``account``) and the customer, their
    message (``message_id``, the provider's) and our conversation (web chat is addressed by it)."""

    account: RecipientConfig
    customer_id: str
    message_id: str
    conversation_id: uuid.UUID


@runtime_checkable
class Signaller(Protocol):
    """A sender that can also tell the customer a message was read and a reply is being written."""

    async def signal(self, target: SignalTarget, *, first: bool) -> bool:
        """Send the read / typing signal (``first``: the first of this draft); True when the indicator
        fades and should be renewed while drafting goes on. Raises a :class:`SendError`."""
        ...


@runtime_checkable
class Sender(Protocol):
    """Sends replies on one channel."""

    @property
    def channel(self) -> Channel:
        """The channel this sender delivers."""
        ...

    @property
    def max_chars(self) -> int:
        """Longest part the provider accepts; longer replies are split."""
        ...

    async def send(
        self,
        payload: OutboundPayload,
        *,
        recipient_config: RecipientConfig,
        start_part: int = 0,
        file: bytes | None = None,
    ) -> SendResult:
        """Deliver ``payload`` (parts from ``start_part`` on, in order; ``file``: the bytes of its
        ``attachment``, which describes them); raise a :class:`SendError`."""
        ...
