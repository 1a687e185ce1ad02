"""Who a web chat visitor is: an HMAC-signed identity from the brand's backend, or an anonymous id.

A signed identity is one string the brand's own server puts in its page::

    v1.<visitor id, base64url without padding>.<expiry, unix seconds>.<hex HMAC-SHA256>

The MAC covers ``v1.<visitor b64>.<expiry>`` and is keyed with the *widget key*,
``HMAC-SHA256(channels.webchat_identity_secret, "webchat-identity:" + widget token)``. The operator
hands each tenant the key of its own widget only, so one tenant can never sign identities that another
tenant's widget accepts, although the platform keeps a single master secret. Signatures are compared
with :func:`hmac.compare_digest`.

Verified and anonymous visitors live in separate namespaces (``user:`` / ``anon:`` customer ids), so an
anonymous visitor cannot claim a signed-in customer's conversation by choosing the same id. An anonymous
id is a random bearer value the widget keeps in ``localStorage``; whoever holds it reads that history.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

from pydantic import SecretStr

from common.errors import InvalidInput, Unauthorized

IDENTITY_VERSION = "v1"
ANONYMOUS_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
MAX_VISITOR_ID_CHARS = 128
_KEY_CONTEXT = b"webchat-identity:"


@dataclass(frozen=True)
class Visitor:
    """A resolved visitor: ``customer_id`` is what conversations are keyed on."""

    visitor_id: str
    verified: bool

    @property
    def customer_id(self) -> str:
        """Namespaced so anonymous ids never collide with verified ones."""
        return f"{'user' if self.verified else 'anon'}:{self.visitor_id}"


def widget_identity_key(secret: SecretStr, token: str) -> bytes:
    """The signing key of one widget, derived from the platform's master secret."""
    return hmac.new(
        secret.get_secret_value().encode(), _KEY_CONTEXT + token.encode(), hashlib.sha256
    ).digest()


def sign_identity(key: bytes, *, visitor_id: str, expires_at: int) -> str:
    """An identity string for ``visitor_id`` valid until ``expires_at`` (what the brand's backend does)."""
    _check_visitor_id(visitor_id)
    encoded = base64.urlsafe_b64encode(visitor_id.encode()).rstrip(b"=").decode()
    signed = f"{IDENTITY_VERSION}.{encoded}.{expires_at}"
    return f"{signed}.{_mac(key, signed)}"


def verify_identity(key: bytes, identity: str, *, now: float, max_ttl_s: int) -> str:
    """The visitor id inside a valid identity; :class:`Unauthorized` for any defect.

    Rejects a wrong version, malformed parts, a bad MAC, an expired identity, and one whose expiry lies
    further than ``max_ttl_s`` ahead (a leaked long-lived identity is worth less).
    """
    parts = identity.split(".")
    if len(parts) != 4 or parts[0] != IDENTITY_VERSION or not parts[2].isdigit():
        raise Unauthorized("malformed visitor identity")
    signed = ".".join(parts[:3])
    if not hmac.compare_digest(_mac(key, signed), parts[3]):
        raise Unauthorized("visitor identity signature does not match")
    expires_at = int(parts[2])
    if expires_at <= now:
        raise Unauthorized("visitor identity has expired", details={"expired_at": expires_at})
    if expires_at > now + max_ttl_s:
        raise Unauthorized("visitor identity expiry is too far ahead", details={"max_ttl_s": max_ttl_s})
    try:
        visitor_id = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthorized("malformed visitor identity") from exc
    _check_visitor_id(visitor_id)
    return visitor_id


def resolve_visitor(
    *,
    secret: SecretStr | None,
    token: str,
    visitor_id: str | None,
    identity: str | None,
    require_identity: bool,
    max_ttl_s: int,
    now: float | None = None,
) -> Visitor:
    """The visitor of one request: the signed identity when given, else the anonymous widget id."""
    if identity:
        if secret is None:
            raise Unauthorized("visitor identities are not enabled on this server")
        key = widget_identity_key(secret, token)
        verified = verify_identity(
            key, identity, now=time.time() if now is None else now, max_ttl_s=max_ttl_s
        )
        if visitor_id and visitor_id != verified:
            raise InvalidInput("visitor_id does not match the signed identity")
        return Visitor(visitor_id=verified, verified=True)
    if require_identity:
        raise Unauthorized("this widget requires a signed visitor identity")
    if not visitor_id or not ANONYMOUS_ID.match(visitor_id):
        raise InvalidInput(
            "visitor_id must be 16-64 characters of A-Z, a-z, 0-9, '_' or '-'",
            details={"field": "visitor_id"},
        )
    return Visitor(visitor_id=visitor_id, verified=False)


def _mac(key: bytes, signed: str) -> str:
    return hmac.new(key, signed.encode(), hashlib.sha256).hexdigest()


def _check_visitor_id(visitor_id: str) -> None:
    if not visitor_id or len(visitor_id) > MAX_VISITOR_ID_CHARS or not visitor_id.isprintable():
        raise Unauthorized("visitor id must be 1-128 printable characters")
