"""The authenticated caller of a request and the scopes it holds."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    """What a route needs. Tenant keys hold tenant scopes; ``operator`` and ``metrics`` are platform-wide.

    ``admin`` implies every tenant scope; no tenant scope implies a platform scope, and the operator
    holds no tenant scope (it onboards tenants and mints their first key, it does not read their
    conversations).
    """

    OPERATOR = "operator"
    METRICS = "metrics"
    ADMIN = "admin"
    BRANDS_READ = "brands:read"
    KNOWLEDGE_READ = "knowledge:read"
    KNOWLEDGE_WRITE = "knowledge:write"
    MESSAGES_WRITE = "messages:write"
    CONVERSATIONS_READ = "conversations:read"
    AGENTS = "agents"


PLATFORM_SCOPES: frozenset[Scope] = frozenset({Scope.OPERATOR, Scope.METRICS})
#: Scopes that bring others with them (besides ``admin``, which brings every tenant scope): an agent
#: picks the brand whose queue it works, so it may list the tenant's brands.
IMPLIED: dict[Scope, frozenset[Scope]] = {Scope.AGENTS: frozenset({Scope.BRANDS_READ})}
#: The scopes a tenant API key may hold.
TENANT_SCOPES: frozenset[Scope] = frozenset(Scope) - PLATFORM_SCOPES


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the operator, a tenant's API key, or the metrics scraper.

    ``actor`` is what the audit log and the logs record: never the secret, only the key's public prefix.
    """

    actor: str
    scopes: frozenset[Scope]
    tenant_id: uuid.UUID | None = None
    key_id: uuid.UUID | None = None

    def allows(self, scope: Scope) -> bool:
        """Whether this caller holds ``scope`` (``admin`` covers every tenant scope of its tenant)."""
        if scope in PLATFORM_SCOPES:
            return scope in self.scopes
        if self.tenant_id is None:
            return False
        return (
            scope in self.scopes
            or Scope.ADMIN in self.scopes
            or any(scope in IMPLIED.get(held, frozenset()) for held in self.scopes)
        )


def operator_principal(actor: str = "operator") -> Principal:
    """The platform operator (bootstrap key from the environment, or the admin CLI with database access)."""
    return Principal(actor=actor, scopes=frozenset(PLATFORM_SCOPES))
