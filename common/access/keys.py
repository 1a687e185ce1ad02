"""Tenant API keys: ``ema_<prefix>_<secret>`` tokens, shown once, stored as a SHA-256 hash.

The prefix (12 hex characters) is the key's public id: it is stored in clear, unique, shown in lists and
the audit log, and used to find the row; the secret (256 random bits from :mod:`secrets`) is never
stored. Verification hashes the presented token and compares the digests with
:func:`hmac.compare_digest`, so neither the lookup nor the comparison leaks the secret by timing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

TOKEN_PREFIX = "ema_"  # noqa: S105 - the public marker of our tokens, not a secret
#: Marker of an agent's sign-in session token (same shape, another table).
SESSION_PREFIX = "eas_"
_SHAPE = r"([0-9a-f]{12})_([A-Za-z0-9_-]{43})$"


@dataclass(frozen=True, slots=True)
class NewToken:
    """A freshly generated token: ``token`` is shown to its owner once; only ``token_hash`` is stored."""

    prefix: str
    token: str
    token_hash: str


def new_token(marker: str = TOKEN_PREFIX) -> NewToken:
    """A new random token: an API key (``ema_``) or an agent session (``eas_``)."""
    prefix = secrets.token_hex(6)
    token = f"{marker}{prefix}_{secrets.token_urlsafe(32)}"
    return NewToken(prefix=prefix, token=token, token_hash=hash_token(token))


def hash_token(token: str) -> str:
    """The stored form of a token (hex SHA-256)."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_prefix(token: str, marker: str = TOKEN_PREFIX) -> str | None:
    """The public prefix of a well-formed token with ``marker``, else None (not one of ours)."""
    found = re.fullmatch(re.escape(marker) + _SHAPE, token)
    return found.group(1) if found else None


def token_matches(token: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented token with a stored hash."""
    return hmac.compare_digest(hash_token(token).encode(), stored_hash.encode())


def secret_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of a presented secret with a configured one (the operator key)."""
    return hmac.compare_digest(given.encode(), expected.encode())


def key_is_live(
    *, revoked_at: datetime | None, expires_at: datetime | None, now: datetime | None = None
) -> bool:
    """Not revoked and not past its expiry."""
    moment = now or datetime.now(UTC)
    return revoked_at is None and (expires_at is None or expires_at > moment)
