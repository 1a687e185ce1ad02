"""From LLM output to executed actions: extract → validate → allow-list → authorize → confirm → run → record.

The model asks for an action with a fenced block (bare JSON objects with an ``action`` key are
recognised too)::

    ```action
    {"action": "order_lookup", "arguments": {"order_id": "A-1001"}}
    ```

Every block is removed from the text the customer could see, whether it is valid or not. A proposal runs
only when all of these hold, and every proposal is recorded in ``action_logs`` with its outcome:

1. the block parses and names a registered plugin (else ``rejected``);
2. the brand allows it (automation rule of kind ``actions``, else ``ACTIONS__DEFAULT_ALLOWED``);
3. its arguments pass the plugin's JSON Schema (ids of customers are never accepted as arguments:
   the schemas forbid extra properties, and identity comes from :class:`ActionContext`);
4. the turn is not tainted: no retrieved passage carried instructions (indirect injection). A poisoned
   document therefore suspends actions in every turn that retrieves it until the brand fixes it;
   the ``indirect_injection`` decision names the passage;
5. side-effecting plugins (``create_ticket``) are not run but parked as ``pending_confirmation``; the
   customer's "yes" on the next turn runs them (:meth:`ActionEngine.resolve_pending`), anything else
   declines them;
6. the plugin authorizes against the verified identity (``order_lookup`` answers ``denied`` for another
   customer's order, worded like "not found").

``(message_key, name)`` is unique in ``action_logs``, so a message processed twice runs an action once.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.config import ActionSettings
from common.conversation.actions import ActionRegistry
from common.conversation.actions.base import ActionContext, ActionPlugin, ActionResult
from common.db import repositories as repo
from common.domain import Channel, GuardrailDecision
from common.logging import get_logger

log = get_logger(__name__)

RULE = "actions"
TAINT_RULE = "indirect_injection"
MALFORMED = "(malformed)"
_KEY_NAMESPACE = uuid.UUID("9d0b8a1e-5f0c-4c57-9a51-7d3c2f0e6a11")

_FENCE = re.compile(r"```[ \t]*([A-Za-z_-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_ACTION_KEY = re.compile(r'\{\s*"(?:action|name|tool)"\s*:')
_AFFIRMATIVE = re.compile(
    r"^\s*(yes|yeah|yep|yup|sure|ok|okay|please do|go ahead|do it|confirm(ed)?|sí|si|claro|vale|oui|ja|sim)"
    r"\b",
    re.IGNORECASE,
)
_NEGATIVE = re.compile(r"^\s*(no|nope|nah|don't|do not|cancel|never ?mind|non|nein|não|nao)\b", re.IGNORECASE)


def message_key(*, brand_id: uuid.UUID, channel: Channel, provider_message_id: str) -> uuid.UUID:
    """The idempotency key of an inbound message, known before its log row exists."""
    return uuid.uuid5(_KEY_NAMESPACE, f"{brand_id}:{channel.value}:{provider_message_id}")


def is_affirmative(text: str) -> bool:
    """A short "yes" in one of the supported languages."""
    return bool(_AFFIRMATIVE.match(text)) and not _NEGATIVE.match(text)


def is_negative(text: str) -> bool:
    """A short "no"."""
    return bool(_NEGATIVE.match(text))


@dataclass(frozen=True)
class Proposal:
    """One action block found in model output; ``error`` set when it is unusable as written."""

    name: str
    arguments: dict[str, Any]
    error: str = ""


@dataclass(frozen=True)
class Extraction:
    """Model output with every action block removed, and the blocks."""

    text: str
    proposals: tuple[Proposal, ...]


def extract_actions(text: str) -> Extraction:
    """Find fenced and bare-JSON action blocks; strip them (and any other code fence) from the text."""
    proposals: list[Proposal] = []

    def fenced(match: re.Match[str]) -> str:
        lang, body = match.group(1).lower(), match.group(2).strip()
        if lang == "action" or body.startswith("{") or _ACTION_KEY.search(body):
            proposals.append(_parse(body))
        return " "

    without_fences = _FENCE.sub(fenced, text)
    remaining, bare = _strip_bare_objects(without_fences)
    proposals.extend(bare)
    cleaned = re.sub(r"[ \t]+", " ", remaining)
    cleaned = re.sub(r"\s*\n\s*", "\n", cleaned).strip()
    return Extraction(cleaned, tuple(proposals))


def _strip_bare_objects(text: str) -> tuple[str, list[Proposal]]:
    proposals: list[Proposal] = []
    decoder = json.JSONDecoder()
    out: list[str] = []
    pos = 0
    for match in _ACTION_KEY.finditer(text):
        if match.start() < pos:
            continue
        out.append(text[pos : match.start()])
        try:
            obj, end = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            proposals.append(Proposal(MALFORMED, {}, "unparseable JSON"))
            line_end = text.find("\n", match.start())
            pos = len(text) if line_end < 0 else line_end
            continue
        proposals.append(_proposal(obj))
        pos = end
    out.append(text[pos:])
    return "".join(out), proposals


def _parse(body: str) -> Proposal:
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        return Proposal(MALFORMED, {}, "unparseable JSON")
    return _proposal(obj)


def _proposal(obj: object) -> Proposal:
    if not isinstance(obj, dict):
        return Proposal(MALFORMED, {}, "not a JSON object")
    name = obj.get("action", obj.get("name", obj.get("tool")))
    if not isinstance(name, str) or not name.strip():
        return Proposal(MALFORMED, {}, "no action name")
    if "arguments" in obj:
        arguments = obj["arguments"]
    else:
        arguments = {k: v for k, v in obj.items() if k not in ("action", "name", "tool")}
    if not isinstance(arguments, dict):
        return Proposal(name[:100], {}, "arguments are not an object")
    return Proposal(name.strip()[:100], arguments)


@dataclass
class ActionOutcome:
    """What processing the proposals of one answer produced."""

    decisions: list[GuardrailDecision] = field(default_factory=list)
    results: list[tuple[str, ActionResult]] = field(default_factory=list)
    confirmation: str = ""


@dataclass(frozen=True)
class PendingOutcome:
    """A pending action resolved by the customer's answer; ``text`` is the reply."""

    text: str
    decision: GuardrailDecision


class ActionEngine:
    """Validates, authorizes, runs and records actions for the orchestrator."""

    def __init__(
        self,
        *,
        registry: ActionRegistry,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: ActionSettings,
    ) -> None:
        self._registry = registry
        self._sessionmaker = sessionmaker
        self._settings = settings

    @property
    def registry(self) -> ActionRegistry:
        """The available plugins."""
        return self._registry

    def allowed(self, brand_allowed: tuple[str, ...] | None) -> tuple[str, ...]:
        """Names the brand may use that are also available here (brand rule, else the default)."""
        wanted = brand_allowed if brand_allowed is not None else tuple(self._settings.default_allowed)
        return tuple(n for n in wanted if self._registry.get(n) is not None)

    def offered(self, allowed: tuple[str, ...]) -> list[ActionPlugin]:
        """Plugins the model is told about (``faq_fallback`` is the orchestrator's, not the model's)."""
        plugins = [self._registry.get(n) for n in allowed if n != "faq_fallback"]
        return [p for p in plugins if p is not None]

    async def process(
        self,
        proposals: tuple[Proposal, ...],
        *,
        context: ActionContext,
        key: uuid.UUID,
        allowed: tuple[str, ...],
        tainted: bool,
    ) -> ActionOutcome:
        """Handle every proposal of one answer; runs read-only ones, parks side-effecting ones."""
        outcome = ActionOutcome()
        for index, proposal in enumerate(proposals):
            plugin, reason = self._vet(proposal, allowed=allowed, tainted=tainted, index=index)
            if plugin is None:
                rule = TAINT_RULE if tainted else RULE
                outcome.decisions.append(GuardrailDecision(rule, "block", f"{proposal.name}: {reason}"))
                await self._record(context, key, proposal, status="rejected", reason=reason)
                continue
            if plugin.side_effect:
                if outcome.confirmation:
                    await self._record(context, key, proposal, status="rejected", reason="one at a time")
                    continue
                if await self._record(context, key, proposal, status="pending_confirmation"):
                    outcome.confirmation = plugin.confirmation(proposal.arguments)
                    outcome.decisions.append(GuardrailDecision(RULE, "confirm", f"{plugin.name}: asked"))
                continue
            result = await self._run_once(plugin, proposal, context=context, key=key)
            if result is not None:
                outcome.results.append((plugin.name, result))
                action = "pass" if result.status == "succeeded" else "block"
                outcome.decisions.append(GuardrailDecision(RULE, action, f"{plugin.name}: {result.status}"))
        return outcome

    async def run_direct(self, name: str, *, context: ActionContext, key: uuid.UUID) -> ActionResult | None:
        """Run a system-initiated action (``faq_fallback``), recorded like any other; None if unavailable."""
        plugin = self._registry.get(name)
        if plugin is None:
            return None
        return await self._run_once(plugin, Proposal(name, {}), context=context, key=key)

    async def resolve_pending(self, *, context: ActionContext, text: str) -> PendingOutcome | None:
        """The customer's answer to a pending confirmation: "yes" runs it, anything else declines it.

        Returns None when nothing was pending or the answer was not a plain yes/no (the message is then
        answered normally; the pending action is declined either way except on "yes").
        """
        async with self._sessionmaker() as session:
            pending = await repo.pending_action(session, conversation_id=context.conversation_id)
            if pending is None:
                return None
            affirmative = is_affirmative(text)
            status = "running" if affirmative else "declined"
            claimed = await repo.claim_pending_action(session, action_id=pending.id, status=status)
            await session.commit()
        if claimed is None:
            return None
        plugin = self._registry.get(claimed.name)
        if not affirmative:
            decision = GuardrailDecision(RULE, "block", f"{claimed.name}: declined by the customer")
            return PendingOutcome("Okay, I won't do that.", decision) if is_negative(text) else None
        if plugin is None:
            await self._finish(claimed.id, status="failed", reason="plugin no longer available")
            return PendingOutcome(
                "Sorry, I can't do that right now.", GuardrailDecision(RULE, "block", claimed.name)
            )
        confirmed = context.model_copy(update={"idempotency_key": str(claimed.id)})
        result = await plugin.run(dict(claimed.arguments), confirmed)
        await self._finish(claimed.id, status=result.status, reason="confirmed", result=result)
        action = "pass" if result.status == "succeeded" else "block"
        return PendingOutcome(
            plugin.reply(result), GuardrailDecision(RULE, action, f"{plugin.name}: confirmed")
        )

    def _vet(
        self, proposal: Proposal, *, allowed: tuple[str, ...], tainted: bool, index: int
    ) -> tuple[ActionPlugin | None, str]:
        if proposal.error:
            return None, proposal.error
        plugin = self._registry.get(proposal.name)
        if plugin is None:
            return None, "unknown action"
        if proposal.name not in allowed:
            return None, "not allowed for this brand"
        errors = sorted(
            jsonschema.Draft202012Validator(plugin.parameters).iter_errors(proposal.arguments),
            key=lambda e: list(e.path),
        )
        if errors:
            return None, f"invalid arguments: {errors[0].message[:200]}"
        if tainted:
            return None, "retrieved context carried instructions; no actions this turn"
        if index >= self._settings.max_actions_per_turn:
            return None, "too many actions in one answer"
        return plugin, ""

    async def _run_once(
        self, plugin: ActionPlugin, proposal: Proposal, *, context: ActionContext, key: uuid.UUID
    ) -> ActionResult | None:
        row_id = await self._record(context, key, proposal, status="running")
        if row_id is None:
            log.info("action_already_claimed", action=plugin.name)
            return None
        result = await plugin.run(
            proposal.arguments, context.model_copy(update={"idempotency_key": str(row_id)})
        )
        await self._finish(row_id, status=result.status, reason="", result=result)
        return result

    async def _record(
        self, context: ActionContext, key: uuid.UUID, proposal: Proposal, *, status: str, reason: str = ""
    ) -> uuid.UUID | None:
        async with self._sessionmaker() as session:
            conversation = await repo.get_conversation(session, conversation_id=context.conversation_id)
            row = await repo.insert_action_log(
                session,
                conversation=conversation,
                message_key=key,
                name=proposal.name,
                arguments=_safe_arguments(proposal.arguments),
                status=status,
                reason=reason,
            )
            await session.commit()
        log.info("action_recorded", action=proposal.name, status=status, reason=reason)
        return row.id if row is not None else None

    async def _finish(
        self, action_id: uuid.UUID, *, status: str, reason: str, result: ActionResult | None = None
    ) -> None:
        async with self._sessionmaker() as session:
            await repo.finish_action_log(
                session,
                action_id=action_id,
                status=status,
                reason=reason,
                result=result.model_dump(mode="json") if result is not None else None,
            )
            await session.commit()


def _safe_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """JSON-serialisable and bounded: model output is stored for audit, not trusted."""
    text = json.dumps(arguments, default=str)[:4000]
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError:
        return {"truncated": text}
    return loaded if isinstance(loaded, dict) else {"value": loaded}
