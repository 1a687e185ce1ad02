"""The message pipeline: one inbound message in, one grounded reply out.

Two entry points share the same drafting and storing code:

* :meth:`MessageOrchestrator.handle` (synchronous API, web chat): validate → brand → duplicate check →
  conversation → retrieve (tenant+brand filtered) → persona prompt → LLM → groundedness guardrail → one
  transaction {inbound log, outbound log, outbox row} → publish to the outbound stream → mark published.
* :meth:`MessageOrchestrator.accept` + :meth:`MessageOrchestrator.process_stored` (webhooks): the
  inbound message is committed with an outbox row for the ``inbound`` stream *before* the provider gets
  its 200; a worker then drafts and stores the reply. One reply per inbound message is enforced by a
  unique index, so redeliveries and racing workers never produce a second answer.

Around drafting sit the trust features (``docs/ESCALATION_AND_ACTIONS.md``): a pending action confirmation
is resolved first; input guardrails (prompt injection, toxicity) and escalation triggers (a person asked
for, negative sentiment, brand automation rules) run before retrieval; retrieved passages are neutralised;
the model's action blocks go through :class:`common.conversation.actions.engine.ActionEngine`; the reply
is checked for
groundedness, personal data and toxicity; repeated failures or missing knowledge hand the conversation to a
human. A handoff is written in the reply's transaction: state ``handoff`` plus an ``agent-events`` outbox
row. Agents answer (``agent_reply``), take over and release conversations through this class too.

Dependencies are injected as plain callables so the same code runs inside the Ray Serve orchestrator
deployment (callables wrap deployment handles) and in-process (tests, the no-Serve baseline benchmark).
A failed publish never fails the reply: the outbox row stays unpublished and the relay sends it later.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common import metrics
from common.config import Settings
from common.conversation import escalation, guardrails, prompting
from common.conversation.actions import ActionContext, ActionRegistry, ActionResult, PluginDeps
from common.conversation.actions.engine import ActionEngine, extract_actions, message_key
from common.db import repositories as repo
from common.domain import (
    Accepted,
    BrandProfile,
    Channel,
    ChannelRoute,
    Citation,
    ConversationState,
    Direction,
    GuardrailDecision,
    InboundMessage,
    OutboundResponse,
)
from common.errors import Conflict, InvalidInput, LLMError, NotFound, PayloadTooLarge, StreamUnavailable
from common.logging import get_logger
from common.observability import carrier, stage
from common.schemas import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    InboundQueued,
    OutboundPayload,
    RetrievedChunk,
)
from common.streams import INBOUND_STREAM, OUTBOUND_STREAM, StreamPublisher
from common.ttl_cache import TTLCache

log = get_logger(__name__)

RetrieveFn = Callable[[uuid.UUID, uuid.UUID, str, int], Awaitable[list[RetrievedChunk]]]
ChatFn = Callable[[ChatRequest], Awaitable[ChatResponse]]

HISTORY_TURNS = 10
HISTORY_BUDGET_TOKENS = 600
#: Said instead of answering a message that tried to override the assistant's instructions.
SAFE_REPLY = "I can't help with that request. I'm happy to answer questions about our products and services."
AGENT_RULE = "agent_reply"


@dataclass(frozen=True)
class _Turn:
    """Everything drafting needs about one inbound message and its conversation."""

    brand: BrandProfile
    message: InboundMessage
    conversation_id: uuid.UUID
    state: ConversationState
    history: list[ChatMessage]
    bot_guardrails: list[list[dict[str, Any]]]  # earlier bot replies' decisions, oldest first
    customer_texts: list[str]  # earlier inbound texts of this conversation
    rules: escalation.BrandRules


@dataclass(frozen=True)
class _Draft:
    """The reply before it is stored."""

    text: str
    citations: list[Citation]
    decisions: list[GuardrailDecision]
    prompt: list[ChatMessage] | None
    usage: ChatResponse | None
    escalated: bool
    handoff: bool = False  # this reply hands the conversation to a human


@dataclass(frozen=True)
class _Written:
    """A stored reply and the outbox rows to publish after commit."""

    response: OutboundResponse
    publish: list[tuple[uuid.UUID, str, dict[str, Any]]]


class MessageOrchestrator:
    """Answers inbound messages; stateless apart from its injected clients."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        retrieve: RetrieveFn,
        chat: ChatFn,
        publisher: StreamPublisher | None,
        actions: ActionEngine | None = None,
        publish_after_ack: bool = False,
    ) -> None:
        """``publish_after_ack``: :meth:`accept` returns once the message is committed and queues it on
        the stream in the background (the gateway's intake: the XADD and the outbox update leave the
        webhook's acknowledgement path; if the process dies first, the outbox relay publishes it)."""
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._retrieve = retrieve
        self._chat = chat
        self._publisher = publisher
        self._publish_after_ack = publish_after_ack
        self._pending_publishes: set[asyncio.Task[None]] = set()
        ttl = settings.channels.route_cache_s
        self._intake_brands: TTLCache[uuid.UUID, BrandProfile | None] = TTLCache(ttl)
        self._routes: TTLCache[tuple[Channel, str], ChannelRoute | None] = TTLCache(ttl)
        self._actions = actions or ActionEngine(
            registry=ActionRegistry.build(
                PluginDeps(settings.actions, retrieve=retrieve, min_score=settings.retrieval.min_score)
            ),
            sessionmaker=sessionmaker,
            settings=settings.actions,
        )

    async def handle(self, message: InboundMessage) -> OutboundResponse:
        """Answer one message now (synchronous API); a repeated message id returns the stored reply.

        Inbound log, reply and outbox row are written in one transaction after generation.
        """
        self._check_size(message)
        with stage("orchestrator.handle", channel=message.channel.value, brand_id=message.brand_id):
            async with self._sessionmaker() as session:
                brand = await self._brand(session, message.brand_id)
                previous = await self._stored_reply(session, message)
                if previous is not None:
                    return previous
                conversation = await self._conversation(session, brand, message)
                history = await repo.recent_messages(
                    session, conversation_id=conversation.id, limit=HISTORY_TURNS
                )
                turn = await self._turn(session, brand, message, conversation, history)
                await session.commit()
                conversation_id = conversation.id
            _count_inbound(message)
            draft = await self._drafted(turn)
            return await self._store_and_publish(brand, message, conversation_id, draft)

    async def accept(self, message: InboundMessage) -> Accepted:
        """Make an inbound message durable and queue it for :meth:`process_stored` (webhook path).

        Returns once the message is committed, so a webhook can acknowledge it; a redelivery of the same
        provider message id is recognised atomically and queues nothing.
        """
        self._check_size(message)
        with stage("orchestrator.accept", channel=message.channel.value, brand_id=message.brand_id) as span:
            async with self._sessionmaker() as session:
                brand = await self._intake_brand(session, message.brand_id)
                conversation = await self._conversation(session, brand, message)
                inbound = await repo.insert_inbound(session, conversation=conversation, message=message)
                if inbound is None:
                    await session.rollback()
                    existing = await repo.find_inbound(
                        session,
                        brand_id=message.brand_id,
                        channel=message.channel,
                        provider_message_id=message.provider_message_id,
                    )
                    if existing is None:  # pragma: no cover - the unique key said it exists
                        raise StreamUnavailable("inbound message vanished during deduplication; retry")
                    span.set_attribute("duplicate", True)
                    return Accepted(existing.id, existing.conversation_id, duplicate=True)
                # The worker continues this trace from the queued entry (through outbox and relay too).
                queued = InboundQueued(inbound_id=inbound.id, brand_id=brand.id, trace=carrier())
                payload = _stream_payload(queued)
                outbox = await repo.add_outbox(session, stream=INBOUND_STREAM, payload=payload)
                await session.commit()
                accepted = Accepted(inbound.id, conversation.id, duplicate=False)
                outbox_id = outbox.id
            span.set_attribute("inbound_id", str(inbound.id))
            _count_inbound(message)
            if self._publish_after_ack:
                task = asyncio.create_task(self._publish(outbox_id, INBOUND_STREAM, payload))
                self._pending_publishes.add(task)  # held until done: the loop keeps only weak references
                task.add_done_callback(self._pending_publishes.discard)
            else:
                await self._publish(outbox_id, INBOUND_STREAM, payload)
            return accepted

    async def flush_publishes(self) -> None:
        """Wait for the stream publishes that :meth:`accept` left running (``publish_after_ack``)."""
        while self._pending_publishes:
            await asyncio.gather(*list(self._pending_publishes), return_exceptions=True)

    async def channel_route(self, channel: Channel, external_id: str) -> ChannelRoute | None:
        """The brand a provider account routes to (enabled or not), cached ``route_cache_s`` seconds."""

        async def load() -> ChannelRoute | None:
            async with self._sessionmaker() as session:
                config = await repo.find_channel_config(session, channel=channel, external_id=external_id)
            if config is None:
                return None
            return ChannelRoute(
                brand_id=config.brand_id, enabled=config.enabled, settings=dict(config.settings or {})
            )

        return await self._routes.get_or_load((channel, external_id), load)

    async def _intake_brand(self, session: AsyncSession, brand_id: uuid.UUID) -> BrandProfile:
        # accept only needs the brand's ids, which never change; the persona is read fresh when drafting.
        brand = await self._intake_brands.get_or_load(
            brand_id, lambda: repo.get_brand_profile(session, brand_id=brand_id)
        )
        if brand is None:
            self._intake_brands.invalidate(brand_id)  # a brand created a moment later must be found
            raise repo.unknown_brand(brand_id)
        return brand

    async def process_stored(self, inbound_id: uuid.UUID) -> OutboundResponse:
        """Answer a message stored by :meth:`accept`; idempotent (a second call returns the first reply)."""
        with stage("orchestrator.process_stored", inbound_id=inbound_id):
            return await self._process_stored(inbound_id)

    async def _process_stored(self, inbound_id: uuid.UUID) -> OutboundResponse:
        async with self._sessionmaker() as session:
            inbound = await repo.get_message(session, message_id=inbound_id)
            if inbound is None or inbound.direction != Direction.INBOUND:
                raise NotFound("unknown inbound message", details={"inbound_id": str(inbound_id)})
            conversation = await repo.get_conversation(session, conversation_id=inbound.conversation_id)
            brand = await self._brand(session, inbound.brand_id)
            message = InboundMessage(
                brand_id=inbound.brand_id,
                channel=Channel(inbound.channel),
                customer_id=conversation.customer_id,
                text=inbound.text,
                provider_message_id=inbound.provider_message_id or str(inbound.id),
            )
            reply = await repo.find_reply_to(session, inbound_id=inbound.id)
            if reply is not None:
                return _response_from_log(message, reply, duplicate=True)
            history = await repo.recent_messages(
                session, conversation_id=conversation.id, limit=HISTORY_TURNS + 1
            )
            earlier = [m for m in history if m.id != inbound.id]
            turn = await self._turn(session, brand, message, conversation, earlier)
        draft = await self._drafted(turn)
        return await self._store_reply(brand, message, conversation, inbound.id, draft)

    # --- agents -------------------------------------------------------------------------------------

    async def agent_reply(self, conversation_id: uuid.UUID, text: str, agent_id: str) -> OutboundResponse:
        """Send a human agent's message on a conversation in ``handoff``: logged, then the outbox row
        (``sender="agent"``) and an ``agent_reply`` event, in one transaction; published after commit."""
        text = text.strip()
        if not text:
            raise InvalidInput("agent message is empty")
        if len(text) > self._settings.max_message_chars:
            raise PayloadTooLarge(
                "agent message is too long", details={"max_chars": self._settings.max_message_chars}
            )
        async with self._sessionmaker() as session:
            conversation = await repo.get_conversation(session, conversation_id=conversation_id)
            _require_state(conversation, ConversationState.HANDOFF, action="reply as agent")
            brand = await self._brand(session, conversation.brand_id)
            decision = GuardrailDecision(AGENT_RULE, "pass", f"agent={agent_id}")
            outbound = await repo.insert_outbound(
                session,
                conversation=conversation,
                in_reply_to=None,
                text=text,
                citations=[],
                guardrails=[asdict(decision)],
                prompt=None,
                llm_usage=None,
            )
            if outbound is None:  # pragma: no cover - only replies to an inbound message can collide
                raise StreamUnavailable("agent reply was not recorded; retry")
            response = OutboundResponse(
                conversation_id=conversation.id,
                message_id=outbound.id,
                brand_id=brand.id,
                channel=Channel(conversation.channel),
                customer_id=conversation.customer_id,
                text=text,
                in_reply_to="",
                guardrails=(decision,),
            )
            payload = outbound_payload(brand, response, sender="agent")
            outbox = await repo.add_outbox(session, stream=OUTBOUND_STREAM, payload=payload)
            event = await self._agent_event(session, conversation, kind="agent_reply", agent_id=agent_id)
            await session.commit()
        await self._publish(outbox.id, OUTBOUND_STREAM, payload)
        await self._publish(*event)
        return response

    async def release(self, conversation_id: uuid.UUID, agent_id: str) -> ConversationState:
        """Hand a conversation back to the bot (``handoff`` → ``bot``)."""
        return await self._move(
            conversation_id,
            agent_id,
            frm=ConversationState.HANDOFF,
            to=ConversationState.BOT,
            kind="released",
        )

    async def take_over(self, conversation_id: uuid.UUID, agent_id: str) -> ConversationState:
        """An agent takes a conversation from the bot (``bot`` → ``handoff``)."""
        return await self._move(
            conversation_id,
            agent_id,
            frm=ConversationState.BOT,
            to=ConversationState.HANDOFF,
            kind="taken_over",
        )

    async def _move(
        self,
        conversation_id: uuid.UUID,
        agent_id: str,
        *,
        frm: ConversationState,
        to: ConversationState,
        kind: str,
    ) -> ConversationState:
        async with self._sessionmaker() as session:
            conversation = await repo.get_conversation(session, conversation_id=conversation_id)
            _require_state(conversation, frm, action=kind.replace("_", " "))
            await repo.set_conversation_state(session, conversation_id=conversation_id, state=to)
            event = await self._agent_event(session, conversation, kind=kind, agent_id=agent_id)
            await session.commit()
        await self._publish(*event)
        log.info("conversation_moved", conversation_id=str(conversation_id), state=str(to), agent_id=agent_id)
        return to

    async def _agent_event(
        self,
        session: AsyncSession,
        conversation: Any,
        *,
        kind: str,
        agent_id: str | None = None,
        trigger: str = "",
        reason: str = "",
    ) -> tuple[uuid.UUID, str, dict[str, Any]]:
        payload = escalation.AgentEvent.model_validate(
            {
                "kind": kind,
                "conversation_id": conversation.id,
                "tenant_id": conversation.tenant_id,
                "brand_id": conversation.brand_id,
                "channel": conversation.channel,
                "customer_id": conversation.customer_id,
                "trigger": trigger,
                "reason": reason,
                "agent_id": agent_id,
            }
        ).model_dump(mode="json")
        stream = self._settings.escalation.events_stream
        outbox = await repo.add_outbox(session, stream=stream, payload=payload)
        return outbox.id, stream, payload

    # --- drafting -----------------------------------------------------------------------------------

    def _check_size(self, message: InboundMessage) -> None:
        if len(message.text) > self._settings.max_message_chars:
            raise PayloadTooLarge(
                "message text is too long",
                details={"max_chars": self._settings.max_message_chars, "chars": len(message.text)},
            )

    @staticmethod
    async def _brand(session: AsyncSession, brand_id: uuid.UUID) -> BrandProfile:
        return await repo.require_brand(session, brand_id=brand_id)

    @staticmethod
    async def _conversation(session: AsyncSession, brand: BrandProfile, message: InboundMessage) -> Any:
        return await repo.get_or_create_conversation(
            session,
            tenant_id=brand.tenant_id,
            brand_id=brand.id,
            channel=message.channel,
            customer_id=message.customer_id,
        )

    @staticmethod
    async def _turn(
        session: AsyncSession,
        brand: BrandProfile,
        message: InboundMessage,
        conversation: Any,
        history: list[Any],
    ) -> _Turn:
        rules = escalation.BrandRules.from_rows(await repo.list_automation_rules(session, brand_id=brand.id))
        return _Turn(
            brand=brand,
            message=message,
            conversation_id=conversation.id,
            state=ConversationState(conversation.state),
            history=[_as_chat(m) for m in history if m.text],
            bot_guardrails=[
                list(m.guardrails or [])
                for m in history
                if m.direction == Direction.OUTBOUND and m.in_reply_to is not None
            ],
            customer_texts=[m.text for m in history if m.direction == Direction.INBOUND],
            rules=rules,
        )

    async def _stored_reply(self, session: AsyncSession, message: InboundMessage) -> OutboundResponse | None:
        inbound = await repo.find_inbound(
            session,
            brand_id=message.brand_id,
            channel=message.channel,
            provider_message_id=message.provider_message_id,
        )
        if inbound is None:
            return None
        reply = await repo.find_reply_to(session, inbound_id=inbound.id)
        if reply is None:
            return None
        return _response_from_log(message, reply, duplicate=True)

    async def _drafted(self, turn: _Turn) -> _Draft:
        """:meth:`_draft` in its own span, its guardrail decisions and escalation counted."""
        with stage("orchestrator.draft") as span:
            draft = await self._draft(turn)
            span.set_attribute("escalated", draft.escalated)
            span.set_attribute("decisions", len(draft.decisions))
        for decision in draft.decisions:
            metrics.inc("ema_guardrail_decisions_total", rule=decision.rule, action=decision.action)
        if draft.handoff:
            trigger = next((d for d in draft.decisions if d.rule.startswith(escalation.RULE_PREFIX)), None)
            metrics.inc(
                "ema_escalations_total",
                brand=str(turn.brand.id),
                trigger=trigger.rule.removeprefix(escalation.RULE_PREFIX) if trigger else "unknown",
            )
        return draft

    async def _draft(self, turn: _Turn) -> _Draft:
        if turn.state is not ConversationState.BOT:
            # A human owns the conversation: log the message, say nothing.
            decision = GuardrailDecision(
                rule="ownership", action="block", reason=f"conversation is {turn.state}"
            )
            return _Draft("", [], [decision], None, None, escalated=turn.state is ConversationState.HANDOFF)
        message = turn.message
        context = ActionContext(
            tenant_id=turn.brand.tenant_id,
            brand_id=turn.brand.id,
            conversation_id=turn.conversation_id,
            channel=message.channel,
            customer_id=message.customer_id,
            question=message.text,
            idempotency_key=message.provider_message_id,
        )
        pending = await self._actions.resolve_pending(context=context, text=message.text)
        if pending is not None:
            return _Draft(pending.text, [], [pending.decision], None, None, escalated=False)
        early = self._screen_input(turn)
        if early is not None:
            return early
        return await self._answer(turn, context)

    def _screen_input(self, turn: _Turn) -> _Draft | None:
        """Input guardrails and escalation triggers that need neither retrieval nor the model."""
        settings = self._settings.escalation
        checked = guardrails.check_input(turn.message.text)
        decisions = list(checked.decisions)
        if checked.injection:
            if settings.on_injection:
                return self._handoff(turn, [*decisions, escalation.decision("guardrail", "prompt injection")])
            return _Draft(SAFE_REPLY, [], decisions, None, None, escalated=False)
        if checked.toxic and settings.on_toxicity:
            return self._handoff(turn, [*decisions, escalation.decision("guardrail", "toxic message")])
        trigger = escalation.input_trigger(
            text=turn.message.text, customer_id=turn.message.customer_id, rules=turn.rules, settings=settings
        )
        if trigger is not None:
            return self._handoff(turn, [*decisions, trigger])
        return None

    async def _answer(self, turn: _Turn, context: ActionContext) -> _Draft:
        brand, message = turn.brand, turn.message
        top_k = self._settings.retrieval.top_k
        started = time.perf_counter()
        with stage("orchestrator.retrieve", top_k=top_k) as span:
            chunks = await self._retrieve(brand.tenant_id, brand.id, message.text, top_k)
            relevant = [c for c in chunks if c.score >= self._settings.retrieval.min_score]
            span.set_attribute("chunks", len(chunks))
            span.set_attribute("relevant", len(relevant))
        log.info(
            "retrieved",
            chunks=len(chunks),
            relevant=len(relevant),
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        failed_streak, none_streak = escalation.streaks(turn.bot_guardrails)
        if not relevant:
            final = guardrails.finalize_answer(answer="", context=[], persona=brand.persona)
            decisions = list(final.decisions)
            if none_streak + 1 >= self._settings.escalation.no_knowledge_turns:
                reason = f"{none_streak + 1} turn(s) in a row without relevant knowledge"
                return self._handoff(
                    turn, [*decisions, escalation.decision("no_knowledge", reason)], final.text
                )
            return _Draft(final.text, [], decisions, None, None, escalated=True)

        screened = guardrails.screen_context(relevant)
        key = message_key(
            brand_id=brand.id, channel=message.channel, provider_message_id=message.provider_message_id
        )
        allowed = self._actions.allowed(turn.rules.allowed_actions)
        prompt = prompting.build_messages(
            brand=brand,
            question=message.text,
            context=screened.chunks,
            history=turn.history,
            history_budget_tokens=HISTORY_BUDGET_TOKENS,
            first_turn=not turn.history,
            tools=self._actions.offered(allowed),
        )
        decisions = list(screened.decisions)
        try:
            usage = await self._generate(ChatRequest(messages=prompt))
        except LLMError as exc:
            return await self._generation_failed(turn, context, key, decisions, exc, failed_streak)
        extraction = extract_actions(usage.text)
        evidence, answer = screened.chunks, extraction.text
        if extraction.proposals:
            outcome = await self._actions.process(
                extraction.proposals, context=context, key=key, allowed=allowed, tainted=screened.tainted
            )
            decisions += outcome.decisions
            if outcome.confirmation:
                return _Draft(outcome.confirmation, [], decisions, prompt, usage, escalated=False)
            if outcome.results:
                evidence = [*screened.chunks, *_result_chunks(outcome.results)]
                prompt = prompting.build_messages(
                    brand=brand,
                    question=message.text,
                    context=evidence,
                    history=turn.history,
                    history_budget_tokens=HISTORY_BUDGET_TOKENS,
                    first_turn=not turn.history,
                )
                answer, second = await self._answer_with_results(prompt, outcome.results, decisions)
                usage = second or usage
        final = guardrails.finalize_answer(answer=answer, context=evidence, persona=brand.persona)
        decisions += final.decisions
        return self._checked(turn, final.text, list(final.citations), decisions, prompt, usage, failed_streak)

    async def _generate(self, request: ChatRequest) -> ChatResponse:
        """One chat completion in an ``llm.chat`` span; tokens and latency counted by model."""
        started = time.perf_counter()
        with stage("llm.chat", stage_label="llm", messages=len(request.messages)) as span:
            usage = await self._chat(request)
            span.set_attribute("model", usage.model)
            span.set_attribute("prompt_tokens", usage.prompt_tokens)
            span.set_attribute("completion_tokens", usage.completion_tokens)
        metrics.observe("ema_llm_latency_seconds", time.perf_counter() - started, model=usage.model)
        metrics.inc("ema_llm_tokens_total", usage.prompt_tokens, model=usage.model, kind="prompt")
        metrics.inc("ema_llm_tokens_total", usage.completion_tokens, model=usage.model, kind="completion")
        return usage

    async def _answer_with_results(
        self,
        prompt: list[ChatMessage],
        results: list[tuple[str, ActionResult]],
        decisions: list[GuardrailDecision],
    ) -> tuple[str, ChatResponse | None]:
        """Second generation, with the action results as context; no further actions are taken."""
        try:
            usage = await self._generate(ChatRequest(messages=prompt))
        except LLMError as exc:
            decisions.append(
                GuardrailDecision("actions", "fallback", f"generation failed: {type(exc).__name__}")
            )
            return " ".join(r.summary for _, r in results), None
        second = extract_actions(usage.text)
        if second.proposals:
            decisions.append(GuardrailDecision("actions", "block", "actions in the follow-up answer ignored"))
        return second.text, usage

    async def _generation_failed(
        self,
        turn: _Turn,
        context: ActionContext,
        key: uuid.UUID,
        decisions: list[GuardrailDecision],
        exc: LLMError,
        failed_streak: int,
    ) -> _Draft:
        """The model is down: quote the brand's best FAQ entry (``faq_fallback``), else the fallback."""
        log.warning("generation_failed", error_type=type(exc).__name__, error=str(exc))
        result = await self._actions.run_direct("faq_fallback", context=context, key=key)
        text = result.summary if result is not None and result.status == "succeeded" else ""
        reason = f"generation failed ({type(exc).__name__}); " + (
            "faq entry quoted" if text else "no faq entry"
        )
        decisions = [*decisions, GuardrailDecision("actions", "fallback", reason)]
        draft = self._checked(
            turn, text or turn.brand.persona.fallback_message, [], decisions, None, None, failed_streak
        )
        return draft

    def _checked(
        self,
        turn: _Turn,
        text: str,
        citations: list[Citation],
        decisions: list[GuardrailDecision],
        prompt: list[ChatMessage] | None,
        usage: ChatResponse | None,
        failed_streak: int,
    ) -> _Draft:
        """Output guardrails (personal data, toxicity) and the repeated-failure trigger."""
        allowed_pii = guardrails.customer_pii([*turn.customer_texts, turn.message.text])
        out = guardrails.check_output(text, allowed_pii=allowed_pii, persona=turn.brand.persona)
        decisions = [*decisions, *out.decisions]
        if out.toxic and self._settings.escalation.on_toxicity:
            return self._handoff(turn, [*decisions, escalation.decision("guardrail", "toxic answer blocked")])
        failed_now = any((d.rule, d.action) in escalation.FAILED_OUTCOMES for d in decisions)
        if failed_now and failed_streak + 1 >= self._settings.escalation.failed_answers:
            reason = f"{failed_streak + 1} failed answers in a row"
            return self._handoff(turn, [*decisions, escalation.decision("failed_answers", reason)])
        return _Draft(out.text, citations if not out.toxic else [], decisions, prompt, usage, escalated=False)

    @staticmethod
    def _handoff(turn: _Turn, decisions: list[GuardrailDecision], text: str | None = None) -> _Draft:
        """Tell the customer in the persona's words; the state change is written with the reply."""
        reply = text or turn.brand.persona.escalation_message
        return _Draft(reply, [], decisions, None, None, escalated=True, handoff=True)

    # --- storing ------------------------------------------------------------------------------------

    async def _store_and_publish(
        self,
        brand: BrandProfile,
        message: InboundMessage,
        conversation_id: uuid.UUID,
        draft: _Draft,
    ) -> OutboundResponse:
        with stage("orchestrator.store_reply", stage_label="store"):
            async with self._sessionmaker() as session:
                conversation = await self._conversation(session, brand, message)
                inbound = await repo.insert_inbound(session, conversation=conversation, message=message)
                if inbound is None:
                    # A concurrent delivery of the same message won the race: answer with its reply.
                    await session.rollback()
                    stored = await self._stored_reply(session, message)
                    if stored is None:
                        raise StreamUnavailable("duplicate message is still being answered; retry shortly")
                    return stored
                written = await self._write_reply(session, brand, message, conversation, inbound.id, draft)
                if written is None:  # pragma: no cover - the inbound row was created in this transaction
                    raise StreamUnavailable("reply already recorded for a new inbound message")
                await session.commit()
        for outbox_id, stream, payload in written.publish:
            await self._publish(outbox_id, stream, payload)
        return written.response

    async def _store_reply(
        self,
        brand: BrandProfile,
        message: InboundMessage,
        conversation: Any,
        inbound_id: uuid.UUID,
        draft: _Draft,
    ) -> OutboundResponse:
        with stage("orchestrator.store_reply", stage_label="store"):
            async with self._sessionmaker() as session:
                written = await self._write_reply(session, brand, message, conversation, inbound_id, draft)
                if written is None:
                    # Another worker answered this message first; its reply stands, ours is dropped.
                    await session.rollback()
                    reply = await repo.find_reply_to(session, inbound_id=inbound_id)
                    if reply is None:  # pragma: no cover - the unique index said it exists
                        raise StreamUnavailable("reply vanished during deduplication; retry")
                    return _response_from_log(message, reply, duplicate=True)
                await session.commit()
        for outbox_id, stream, payload in written.publish:
            await self._publish(outbox_id, stream, payload)
        return written.response

    async def _write_reply(
        self,
        session: AsyncSession,
        brand: BrandProfile,
        message: InboundMessage,
        conversation: Any,
        inbound_id: uuid.UUID,
        draft: _Draft,
    ) -> _Written | None:
        """Reply log row and, when there is something to send, its outbox row; on a handoff also the state
        change and the agents' event (caller commits)."""
        outbound = await repo.insert_outbound(
            session,
            conversation=conversation,
            in_reply_to=inbound_id,
            text=draft.text,
            citations=[asdict(c) for c in draft.citations],
            guardrails=[asdict(d) for d in draft.decisions],
            prompt=_audit_prompt(draft.prompt),
            llm_usage=_usage(draft.usage),
        )
        if outbound is None:
            return None
        response = OutboundResponse(
            conversation_id=conversation.id,
            message_id=outbound.id,
            brand_id=brand.id,
            channel=message.channel,
            customer_id=message.customer_id,
            text=draft.text,
            in_reply_to=message.provider_message_id,
            citations=tuple(draft.citations),
            guardrails=tuple(draft.decisions),
            escalated=draft.escalated,
        )
        publish: list[tuple[uuid.UUID, str, dict[str, Any]]] = []
        if draft.handoff:
            await repo.set_conversation_state(
                session, conversation_id=conversation.id, state=ConversationState.HANDOFF
            )
            trigger = next((d for d in draft.decisions if d.rule.startswith(escalation.RULE_PREFIX)), None)
            publish.append(
                await self._agent_event(
                    session,
                    conversation,
                    kind="handoff",
                    trigger=trigger.rule.removeprefix(escalation.RULE_PREFIX) if trigger else "",
                    reason=trigger.reason if trigger else "",
                )
            )
            log.info("conversation_handed_off", conversation_id=str(conversation.id))
        if draft.text:
            payload = outbound_payload(brand, response)
            outbox = await repo.add_outbox(session, stream=OUTBOUND_STREAM, payload=payload)
            publish.insert(0, (outbox.id, OUTBOUND_STREAM, payload))
        return _Written(response, publish)

    async def _publish(self, outbox_id: uuid.UUID, stream: str, payload: dict[str, Any]) -> None:
        """Best effort: on failure the outbox row stays unpublished and the relay sends it later."""
        if self._publisher is None:
            return
        try:
            with stage("stream.publish", stage_label="publish", stream=stream):
                await self._publisher.publish(stream, payload)
        except StreamUnavailable as exc:
            log.warning("outbox_publish_deferred", outbox_id=str(outbox_id), stream=stream, error=str(exc))
            return
        async with self._sessionmaker() as session:
            await repo.mark_outbox_published(session, outbox_ids=[outbox_id])
            await session.commit()


def outbound_payload(
    brand: BrandProfile, response: OutboundResponse, *, sender: Literal["bot", "agent"] = "bot"
) -> dict[str, Any]:
    """The JSON (an :class:`common.schemas.OutboundPayload`) a channel dispatcher needs for one reply."""
    payload = OutboundPayload(
        message_id=response.message_id,
        conversation_id=response.conversation_id,
        tenant_id=brand.tenant_id,
        brand_id=brand.id,
        channel=response.channel,
        customer_id=response.customer_id,
        in_reply_to=response.in_reply_to or None,
        text=response.text,
        sender=sender,
        trace=carrier(),  # the dispatcher continues this trace (through outbox and relay too)
    )
    return _stream_payload(payload)


def _stream_payload(model: OutboundPayload | InboundQueued) -> dict[str, Any]:
    """JSON for a stream entry; without a ``trace`` key when there is no context to carry (tracing off),
    so entries stay as they were before tracing existed."""
    return model.model_dump(mode="json", exclude={"trace"} if model.trace is None else None)


def _count_inbound(message: InboundMessage) -> None:
    metrics.inc(
        "ema_messages_total", channel=message.channel.value, brand=str(message.brand_id), direction="inbound"
    )


def _require_state(conversation: Any, state: ConversationState, *, action: str) -> None:
    if conversation.state != state.value:
        raise Conflict(
            f"cannot {action}: conversation is {conversation.state}",
            details={"conversation_id": str(conversation.id), "state": conversation.state},
        )


def _result_chunks(results: list[tuple[str, ActionResult]]) -> list[RetrievedChunk]:
    """Action results as context passages, so the final answer is checked against them too."""
    return [
        RetrievedChunk(
            chunk_id=f"action:{name}:{i}", text=r.summary, source=f"action:{name}", heading_path="", score=1.0
        )
        for i, (name, r) in enumerate(results, start=1)
    ]


def _audit_prompt(prompt: list[ChatMessage] | None) -> list[dict[str, Any]] | None:
    """The rendered prompt as stored for audit: personal data redacted, template version attached."""
    if not prompt:
        return None
    stored = [{"role": m.role, "content": guardrails.redact(m.content)} for m in prompt]
    stored[0]["version"] = prompting.PROMPT_VERSION
    return stored


def _usage(resp: ChatResponse | None) -> dict[str, Any] | None:
    if resp is None:
        return None
    return {
        "model": resp.model,
        "prompt_tokens": resp.prompt_tokens,
        "completion_tokens": resp.completion_tokens,
        "latency_ms": resp.latency_ms,
        "raw_answer_chars": len(resp.text),
        "prompt_version": prompting.PROMPT_VERSION,
    }


def _as_chat(row: Any) -> ChatMessage:
    if row.direction == Direction.INBOUND:
        return ChatMessage(role="user", content=row.text)
    return ChatMessage(role="assistant", content=row.text)


def _response_from_log(message: InboundMessage, reply: Any, *, duplicate: bool) -> OutboundResponse:
    citations = tuple(Citation(**c) for c in (reply.citations or []))
    decisions = tuple(GuardrailDecision(**d) for d in (reply.guardrails or []))
    return OutboundResponse(
        conversation_id=reply.conversation_id,
        message_id=reply.id,
        brand_id=reply.brand_id,
        channel=message.channel,
        customer_id=message.customer_id,
        text=reply.text,
        in_reply_to=message.provider_message_id,
        citations=citations,
        guardrails=decisions,
        escalated=any(d.action == "escalate" for d in decisions),
        duplicate=duplicate,
    )
