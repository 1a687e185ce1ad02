"""What every channel adapter does: verify a raw webhook body, then parse it into events.

An adapter is stateless (no per-request state on the object) and does no I/O: the route reads the raw
body once, asks the adapter to verify it, parses JSON, asks the adapter for events, and only then touches
the database. Tenant and brand resolution happen in the route, from ``ChannelConfig`` rows keyed by each
event's ``account_id``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from common.domain import Channel
from common.errors import InvalidInput, Unauthorized

META_SIGNATURE_HEADER = "x-hub-signature-256"


@dataclass(frozen=True, slots=True)
class ChannelEvent:
    """A customer message to record: the normalised fields before the brand is known.

    ``unsupported`` names the media type (``image``, ``sticker``, ...) when ``text`` is only a placeholder.
    """

    account_id: str
    customer_id: str
    message_id: str
    text: str
    unsupported: str | None = None


@dataclass(frozen=True, slots=True)
class IgnoredEvent:
    """Something the provider sent that is deliberately not recorded, and why."""

    reason: str
    account_id: str | None = None


ParsedEvent = ChannelEvent | IgnoredEvent


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


def unsupported_text(kind: str) -> str:
    """Placeholder text recorded for a message type we cannot read (image, sticker, location...)."""
    return f"[unsupported: {kind}]"


def verify_meta_signature(*, headers: Mapping[str, str], body: bytes, secret: str | None) -> None:
    """Check Meta's ``X-Hub-Signature-256: sha256=<hex>`` (HMAC-SHA256 of the raw body, app secret).

    No configured secret means nothing can be verified, so everything is refused: the check is never
    skipped.
    """
    if not secret:
        raise Unauthorized("webhook secret is not configured")
    header = headers.get(META_SIGNATURE_HEADER, "")
    scheme, _, received = header.partition("=")
    if scheme != "sha256" or not received:
        raise Unauthorized("missing or malformed signature")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, received.strip().lower()):
        raise Unauthorized("signature does not match")


def invalid_payload(exc: ValidationError) -> InvalidInput:
    """A provider payload that does not have the documented shape, as a 400 with the field errors."""
    errors = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return InvalidInput("webhook payload failed validation", details={"errors": errors[:20]})
