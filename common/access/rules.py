"""A brand's automation rules, managed through the API (``/v1/brands/{id}/rules``) and validated on
write: a rule's ``config`` must be what its ``kind`` reads (:class:`EscalateRuleConfig` for
``escalate``, :class:`ActionsRuleConfig` with known action names for ``actions``,
:class:`OfferRuleConfig` naming an action that asks the customer first for ``offer``,
:class:`SuggestRuleConfig` for ``suggest``), so a typo is a 400
to the person who made it, not a rule silently skipped at read time. Every change is audited with the
rule before and after.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.access.management import audit
from common.access.principal import Principal
from common.conversation.actions import CONFIRMED_ACTIONS, PLUGIN_BUILDERS
from common.conversation.escalation import (
    ACTIONS_RULE_KIND,
    ESCALATE_RULE_KIND,
    OFFER_RULE_KIND,
    SUGGEST_RULE_KIND,
    ActionsRuleConfig,
    EscalateRuleConfig,
    OfferRuleConfig,
    SuggestRuleConfig,
)
from common.db import repositories as repo
from common.db.models import AutomationRule
from common.errors import InvalidInput, NotFound

RuleKind = Literal["escalate", "actions", "offer", "suggest"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleIn(_Model):
    """``POST /v1/brands/{id}/rules``."""

    name: str = Field(min_length=1, max_length=200)
    kind: RuleKind
    config: dict[str, Any]
    enabled: bool = True
    priority: int = Field(default=100, ge=0, le=10_000, description="Lower runs first")


class RulePatch(_Model):
    """``PATCH /v1/brands/{id}/rules/{rule_id}``: the fields to change (``config`` whole)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    config: dict[str, Any] | None = None
    enabled: bool | None = None
    priority: int | None = Field(default=None, ge=0, le=10_000)


class RuleOut(_Model):
    """A rule as the API shows it."""

    id: uuid.UUID
    brand_id: uuid.UUID
    name: str
    kind: RuleKind
    config: dict[str, Any]
    enabled: bool
    priority: int


def validate_config(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` checked against what ``kind`` reads, in its normal form; :class:`InvalidInput` else."""
    try:
        if kind == ESCALATE_RULE_KIND:
            return EscalateRuleConfig.model_validate(config).model_dump(mode="json", exclude_defaults=True)
        if kind == ACTIONS_RULE_KIND:
            parsed = ActionsRuleConfig.model_validate(config)
            unknown = sorted(set(parsed.allowed) - set(PLUGIN_BUILDERS))
            if unknown:
                raise InvalidInput(
                    "unknown action in allowed",
                    details={"unknown": unknown, "known": sorted(PLUGIN_BUILDERS)},
                )
            return parsed.model_dump(mode="json")
        if kind == OFFER_RULE_KIND:
            offer = OfferRuleConfig.model_validate(config)
            if offer.action not in CONFIRMED_ACTIONS:
                # A rule never acts on its own: only an action the customer confirms may be offered.
                raise InvalidInput(
                    "an offer rule names an action the customer confirms",
                    details={"action": offer.action, "offerable": sorted(CONFIRMED_ACTIONS)},
                )
            return offer.model_dump(mode="json")
        if kind == SUGGEST_RULE_KIND:
            return SuggestRuleConfig.model_validate(config).model_dump(mode="json")
    except ValidationError as exc:
        errors = [{"loc": ["config", *map(str, e["loc"])], "msg": e["msg"]} for e in exc.errors()]
        raise InvalidInput(f"invalid {kind} rule config", details={"errors": errors[:20]}) from None
    raise InvalidInput("unknown rule kind", details={"kind": kind})


def rule_out(row: AutomationRule) -> RuleOut:
    """API view of a rule."""
    return RuleOut(
        id=row.id,
        brand_id=row.brand_id,
        name=row.name,
        kind=row.kind,  # type: ignore[arg-type]  # the API only ever wrote these kinds
        config=dict(row.config or {}),
        enabled=row.enabled,
        priority=row.priority,
    )


class Rules:
    """List, add, change and remove a brand's automation rules (the next message uses them)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def list_rules(self, tenant_id: uuid.UUID, brand_id: uuid.UUID) -> list[RuleOut]:
        """Every rule of the brand, enabled or not, in the order they run."""
        async with self._sessionmaker() as session:
            await repo.require_brand(session, brand_id=brand_id, tenant_id=tenant_id)
            rows = await repo.list_automation_rules(session, brand_id=brand_id, include_disabled=True)
        return [rule_out(r) for r in rows]

    async def add(self, actor: Principal, tenant_id: uuid.UUID, brand_id: uuid.UUID, body: RuleIn) -> RuleOut:
        """A new rule, its config validated first."""
        config = validate_config(body.kind, body.config)
        async with self._sessionmaker() as session:
            await repo.require_brand(session, brand_id=brand_id, tenant_id=tenant_id)
            row = await repo.add_automation_rule(
                session,
                tenant_id=tenant_id,
                brand_id=brand_id,
                name=body.name,
                kind=body.kind,
                config=config,
                priority=body.priority,
                enabled=body.enabled,
            )
            out = rule_out(row)
            await audit(session, actor, tenant_id, "rule.create", "automation_rule", row.id, after=out)
            await session.commit()
        return out

    async def update(
        self,
        actor: Principal,
        tenant_id: uuid.UUID,
        brand_id: uuid.UUID,
        rule_id: uuid.UUID,
        patch: RulePatch,
    ) -> RuleOut:
        """Change a rule; a new config is validated against the rule's kind."""
        async with self._sessionmaker() as session:
            row = await self._row(session, tenant_id, brand_id, rule_id)
            before = rule_out(row)
            if patch.config is not None:
                row.config = validate_config(row.kind, patch.config)
            if patch.name is not None:
                row.name = patch.name
            if patch.enabled is not None:
                row.enabled = patch.enabled
            if patch.priority is not None:
                row.priority = patch.priority
            await session.flush()
            out = rule_out(row)
            await audit(
                session, actor, tenant_id, "rule.update", "automation_rule", rule_id, before=before, after=out
            )
            await session.commit()
        return out

    async def delete(
        self, actor: Principal, tenant_id: uuid.UUID, brand_id: uuid.UUID, rule_id: uuid.UUID
    ) -> RuleOut:
        """Remove a rule."""
        async with self._sessionmaker() as session:
            row = await self._row(session, tenant_id, brand_id, rule_id)
            out = rule_out(row)
            await session.delete(row)
            await audit(session, actor, tenant_id, "rule.delete", "automation_rule", rule_id, before=out)
            await session.commit()
        return out

    @staticmethod
    async def _row(
        session: AsyncSession, tenant_id: uuid.UUID, brand_id: uuid.UUID, rule_id: uuid.UUID
    ) -> AutomationRule:
        await repo.require_brand(session, brand_id=brand_id, tenant_id=tenant_id)
        row = await session.get(AutomationRule, rule_id)
        if row is None or row.brand_id != brand_id:
            raise NotFound("unknown rule", details={"rule_id": str(rule_id)})
        return row
