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


class Role(StrEnum):
    """What a signed-in agent account may do."""

    AGENT = "agent"  # work the queue: read, reply, take over, release
    SUPERVISOR = "supervisor"  # and read any conversation and the knowledge jobs of its brands
    ADMIN = "admin"  # everything a tenant admin key may do


ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    Role.AGENT: frozenset({Scope.AGENTS}),
    Role.SUPERVISOR: frozenset({Scope.AGENTS, Scope.CONVERSATIONS_READ, Scope.KNOWLEDGE_READ}),
    Role.ADMIN: frozenset({Scope.ADMIN}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the operator, a tenant's API key, a signed-in agent, or the metrics scraper.

    ``actor`` is what the audit log and the logs record: never the secret, only the key's public prefix
    or the agent's account. ``brand_ids`` limits a signed-in agent to some brands (None: all of its
    tenant's); ``agent_id`` and ``session_id`` are set for a signed-in agent only.
    """

    actor: str
    scopes: frozenset[Scope]
    tenant_id: uuid.UUID | None = None
    key_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    brand_ids: frozenset[uuid.UUID] | None = None

    def sees_brand(self, brand_id: uuid.UUID) -> bool:
        """Whether a brand of its tenant is within this caller's brands."""
        return self.brand_ids is None or brand_id in self.brand_ids

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
