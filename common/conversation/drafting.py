"""Drafting: one inbound message and its conversation (a :class:`Turn`) in, one reply (a :class:`Draft`) out.

In order: a pending action confirmation is resolved first; input guardrails (prompt injection, toxicity)
and escalation triggers (a person asked for, negative sentiment, brand automation rules) run before
retrieval; a brand ``offer`` rule the message matches proposes its action without the model; the
question's typos are corrected against the brand's words and a follow-up is searched with the previous
message; retrieved passages are neutralised; their sentences are scored against the question
and a question they do not cover is declined (:mod:`common.conversation.answering`); with the embedded
model the best sentences are the answer, else the persona prompt goes to the model, its action blocks go
through :class:`common.conversation.actions.engine.ActionEngine` and its answer is checked for
groundedness and contradictions (replaced by the sentences when rejected); then personal data and
toxicity; repeated failures or missing knowledge hand the conversation to a human (``Draft.handoff``,
written with the reply by :mod:`common.conversation.replies`). Nothing here writes.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from common import metrics
from common.config import LLMProvider, Settings
from common.conversation import answering, escalation, guardrails, prompting
from common.conversation.actions import ActionContext, ActionResult
from common.conversation.actions.engine import ActionEngine, Proposal, extract_actions, message_key
from common.conversation.media import MediaOutcome
from common.db import repositories as repo
from common.domain import (
    BrandProfile,
    Citation,
    ConversationState,
    Direction,
    GuardrailDecision,
    InboundMessage,
)
from common.errors import LLMError
from common.logging import get_logger
from common.observability import stage
from common.schemas import ChatMessage, ChatRequest, ChatResponse, RetrievedChunk

log = get_logger(__name__)

#: The decision of a reply an ``offer`` rule produced.
OFFER_RULE = "offer"

RetrieveFn = Callable[[uuid.UUID, uuid.UUID, str, int], Awaitable[list[RetrievedChunk]]]
ChatFn = Callable[[ChatRequest], Awaitable[ChatResponse]]
#: A streaming completion: content deltas as the model writes them (OpenAI-compatible ``stream: true``).
StreamFn = Callable[[ChatRequest], AsyncIterator[str]]
#: Told the customer-visible draft so far while the model writes (web chat shows it provisionally).
ProgressFn = Callable[[str], Awaitable[None]]
#: Similarity of each sentence to a query (the knowledge replica's ``rank_sentences``).
RankFn = Callable[[str, list[str]], Awaitable[list[float]]]
#: A message with its typos corrected against the brand's words (the knowledge replica's).
SpellFn = Callable[[uuid.UUID, uuid.UUID, str], Awaitable[str]]

HISTORY_TURNS = 10
HISTORY_BUDGET_TOKENS = 600
#: Where the draft being written goes, for the draft running in this task (set by :meth:`Drafter.draft`).
_PROGRESS: ContextVar[ProgressFn | None] = ContextVar("draft_progress", default=None)
#: Where an action block can begin in a model's text: nothing from here on is shown while it streams.
_ACTION_START = re.compile(r"```|\{")

#: Said instead of answering a message that tried to override the assistant's instructions.
SAFE_REPLY = "I can't help with that request. I'm happy to answer questions about our products and services."


@dataclass(frozen=True)
class Turn:
    """Everything drafting needs about one inbound message and its conversation."""

    brand: BrandProfile
    message: InboundMessage
    conversation_id: uuid.UUID
    state: ConversationState
    history: list[ChatMessage]
    bot_guardrails: list[list[dict[str, Any]]]  # earlier bot replies' decisions, oldest first
    customer_texts: list[str]  # earlier inbound texts of this conversation
    rules: escalation.BrandRules
    #: A picture, file or voice note with nothing to answer (no caption, no transcript), and why.
    unreadable: MediaOutcome | None = None


@dataclass(frozen=True)
class Draft:
    """The reply before it is stored."""

    text: str
    citations: list[Citation]
    decisions: list[GuardrailDecision]
    prompt: list[ChatMessage] | None
    usage: ChatResponse | None
    escalated: bool
    handoff: bool = False  # this reply hands the conversation to a human


async def load_turn(
    session: AsyncSession,
    brand: BrandProfile,
    message: InboundMessage,
    conversation: Any,
    history: list[Any],
    unreadable: MediaOutcome | None = None,
) -> Turn:
    """The turn of ``message``: brand, conversation state, history, earlier decisions, brand rules."""
    rules = escalation.BrandRules.from_rows(await repo.list_automation_rules(session, brand_id=brand.id))
    return Turn(
        brand=brand,
        message=message,
        conversation_id=conversation.id,
        state=ConversationState(conversation.state),
        history=[as_chat(m) for m in history if m.text],
        bot_guardrails=[
            list(m.guardrails or [])
            for m in history
            if m.direction == Direction.OUTBOUND and m.in_reply_to is not None
        ],
        customer_texts=[m.text for m in history if m.direction == Direction.INBOUND],
        rules=rules,
        unreadable=unreadable,
    )


class Drafter:
    """Drafts replies; stateless apart from its injected callables (retrieval, chat model, actions)."""

    def __init__(
        self,
        *,
        settings: Settings,
        retrieve: RetrieveFn,
        chat: ChatFn,
        actions: ActionEngine,
        rank: RankFn | None = None,
        spell: SpellFn | None = None,
        stream: StreamFn | None = None,
    ) -> None:
        """``rank`` scores passage sentences by meaning (without it, by key terms only); ``spell``
        corrects a question's typos against the brand's words before anything else reads it; ``stream``
        (the same model, streaming) writes a draft a ``progress`` callback can show as it grows."""
        self._settings = settings
        self._retrieve = retrieve
        self._rank = rank
        self._spell = spell
        mode = settings.answers.mode
        # "auto": the embedded model is too small to beat the passages' own sentences (docs/QUALITY.md);
        # a configured endpoint (vLLM, OpenAI-compatible) is assumed capable and answers.
        local = settings.llm.provider is LLMProvider.LOCAL
        self._extract_first = mode == "extract" or (mode == "auto" and local)
        self._chat = chat
        self._stream = stream
        self._actions = actions

    async def draft(self, turn: Turn, progress: ProgressFn | None = None) -> Draft:
        """Draft ``turn`` in its own span, its guardrail decisions and escalation counted.

        ``progress``: told the text so far while a streaming model writes it (never an action block).
        Only a draft: the returned reply, checked by the guardrails, is what is stored and sent.
        """
        token = _PROGRESS.set(progress if self._stream is not None else None)
        try:
            with stage("orchestrator.draft") as span:
                draft = await self._draft(turn)
                span.set_attribute("escalated", draft.escalated)
                span.set_attribute("decisions", len(draft.decisions))
        finally:
            _PROGRESS.reset(token)
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

    async def _draft(self, turn: Turn) -> Draft:
        if turn.state is not ConversationState.BOT:
            # A human owns the conversation: log the message, say nothing.
            decision = GuardrailDecision(
                rule="ownership", action="block", reason=f"conversation is {turn.state}"
            )
            return Draft("", [], [decision], None, None, escalated=turn.state is ConversationState.HANDOFF)
        if turn.unreadable is not None:
            return self._unreadable(turn, turn.unreadable)
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
            return Draft(pending.text, [], [pending.decision], None, None, escalated=False)
        early = self._screen_input(turn)
        if early is not None:
            return early
        offered = await self._offered(turn, context)
        if offered is not None:
            return offered
        return await self._answer(turn, context)

    async def _offered(self, turn: Turn, context: ActionContext) -> Draft | None:
        """The confirmation question of the brand's ``offer`` rule the message matches: its action is
        proposed as if the model had asked for it (allow-list, schema, recorded, parked until the
        customer says yes). None when no rule matches or the engine would not ask (then the message is
        answered as usual, and a refusal is in ``action_logs``)."""
        match = turn.rules.offer(turn.message.text)
        if match is None:
            return None
        name, rule = match
        plugin = self._actions.registry.get(rule.action)
        if plugin is None or not plugin.side_effect:
            log.info("offer_rule_unavailable", rule=name, action=rule.action)
            return None
        properties = plugin.parameters.get("properties", {})
        limits = {k: int(v["maxLength"]) for k, v in properties.items() if "maxLength" in v}
        message = turn.message
        outcome = await self._actions.process(
            (Proposal(rule.action, rule.arguments_for(message.text, limits)),),
            context=context,
            key=message_key(
                brand_id=turn.brand.id,
                channel=message.channel,
                provider_message_id=message.provider_message_id,
            ),
            # The rule is the brand allowing this action when its words match (validated on write to
            # actions the customer confirms); the model is offered only the allow-list.
            allowed=(rule.action,),
            tainted=False,  # nothing was retrieved: the customer's own words, and they confirm first
        )
        if not outcome.confirmation:
            log.info("offer_rule_refused", rule=name, action=rule.action, decisions=len(outcome.decisions))
            return None
        decisions = [
            GuardrailDecision(OFFER_RULE, "pass", f"rule {name!r}: {rule.action}"),
            *outcome.decisions,
        ]
        return Draft(outcome.confirmation, [], decisions, None, None, escalated=False)

    def _screen_input(self, turn: Turn) -> Draft | None:
        """Input guardrails and escalation triggers that need neither retrieval nor the model."""
        settings = self._settings.escalation
        checked = guardrails.check_input(turn.message.text)
        decisions = list(checked.decisions)
        if checked.injection:
            if settings.on_injection:
                return self._handoff(turn, [*decisions, escalation.decision("guardrail", "prompt injection")])
            return Draft(SAFE_REPLY, [], decisions, None, None, escalated=False)
        if checked.toxic and settings.on_toxicity:
            return self._handoff(turn, [*decisions, escalation.decision("guardrail", "toxic message")])
        trigger = escalation.input_trigger(
            text=turn.message.text, customer_id=turn.message.customer_id, rules=turn.rules, settings=settings
        )
        if trigger is not None:
            return self._handoff(turn, [*decisions, trigger])
        return None

    async def _answer(self, turn: Turn, context: ActionContext) -> Draft:
        brand, message = turn.brand, turn.message
        answers = self._settings.answers
        top_k = self._settings.retrieval.top_k
        question = message.text
        if self._spell is not None and answers.spelling:
            question = await self._spell(brand.tenant_id, brand.id, message.text)
        # A tap on a suggestion is a whole question of its own, never a follow-up of the one before.
        followup = answers.followups and message.text not in turn.rules.suggestions
        query = answering.retrieval_query(question, turn.customer_texts) if followup else question
        started = time.perf_counter()
        with stage("orchestrator.retrieve", top_k=top_k) as span:
            chunks = await self._retrieve(brand.tenant_id, brand.id, query, top_k)
            relevant = [c for c in chunks if c.score >= self._settings.retrieval.min_score]
            span.set_attribute("chunks", len(chunks))
            span.set_attribute("relevant", len(relevant))
        log.info(
            "retrieved",
            chunks=len(chunks),
            relevant=len(relevant),
            followup=query != question,
            corrected=question != message.text,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        failed_streak, none_streak = escalation.streaks(turn.bot_guardrails)
        if not relevant:
            return self._not_covered(turn, [], none_streak)
        screened = guardrails.screen_context(relevant)
        earlier = ""
        if query != question and turn.customer_texts:
            earlier = answering.followup_context(turn.customer_texts[-1], question)
        scored = await self._score_sentences(question, earlier, screened.chunks)
        verdict = answering.assess(
            question,
            scored,
            screened.chunks,
            min_score=answers.min_score,
            max_uncovered_share=answers.max_uncovered_share,
            sure_semantic=answers.sure_semantic,
            names_decline=answers.names_decline,
        )
        declined: GuardrailDecision | None = None
        offered = self._actions.offered(self._actions.allowed(turn.rules.allowed_actions))
        if not verdict.answerable:
            declined = GuardrailDecision(answering.RULE, "decline", f"{verdict.reason}; {verdict.figures}")
            if not offered:
                return self._not_covered(turn, [*screened.decisions, declined], none_streak)
            extractive = None
            # An action may still answer it (an order's status is in no document): the model is asked,
            # and the question is declined afterwards unless an action produced a result.
        else:
            screened = guardrails.ScreenedContext(
                screened.chunks,
                screened.tainted,
                (*screened.decisions, GuardrailDecision(answering.RULE, "pass", verdict.figures)),
            )
            extractive = answering.select(scored, question)
        if self._extract_first and extractive is not None and not offered:
            final = guardrails.extracted_answer(extractive)
            decisions = [*screened.decisions, *final.decisions]
            return self._checked(
                turn, final.text, final.citations, decisions, None, None, failed_streak, screened.chunks
            )
        return await self._generated(
            turn, context, screened, extractive, failed_streak, declined=declined, none_streak=none_streak
        )

    async def _score_sentences(
        self, question: str, earlier: str, chunks: list[RetrievedChunk]
    ) -> list[answering.Scored]:
        """Every sentence of the passages scored against the question (``earlier``: the message a
        follow-up leans on); by meaning too when a ranker is wired."""
        found = answering.candidates(chunks)
        semantic = None
        if self._rank is not None and found:
            with stage("orchestrator.rank_sentences", sentences=len(found)):
                query = f"{earlier} {question}".strip()
                semantic = await self._rank(query, [c.embed_text for c in found])
        return answering.score(
            question, found, semantic, lexical_weight=self._settings.answers.lexical_weight, earlier=earlier
        )

    def _not_covered(self, turn: Turn, decisions: list[GuardrailDecision], none_streak: int) -> Draft:
        """The brand's fallback and an offer of a person; a streak of these hands the conversation over."""
        final = guardrails.finalize_answer(answer="", context=[], persona=turn.brand.persona)
        decisions = [*decisions, *final.decisions]
        if none_streak + 1 >= self._settings.escalation.no_knowledge_turns:
            reason = f"{none_streak + 1} turn(s) in a row without relevant knowledge"
            return self._handoff(turn, [*decisions, escalation.decision("no_knowledge", reason)], final.text)
        if turn.rules.suggestions:
            # The brand's suggested questions under the fallback: what it can help with, one tap away.
            decisions.append(escalation.suggestion(turn.rules.suggestions))
        return Draft(final.text, [], decisions, None, None, escalated=True)

    async def _generated(
        self,
        turn: Turn,
        context: ActionContext,
        screened: guardrails.ScreenedContext,
        extractive: answering.Selection | None,
        failed_streak: int,
        *,
        declined: GuardrailDecision | None = None,
        none_streak: int = 0,
    ) -> Draft:
        """The model's answer, checked against the passages; the extractive answer replaces a rejected one.

        ``declined``: the knowledge does not cover the question; only an action result can answer it.
        """
        brand, message = turn.brand, turn.message
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
        answered_by_action = False
        if extraction.proposals:
            outcome = await self._actions.process(
                extraction.proposals, context=context, key=key, allowed=allowed, tainted=screened.tainted
            )
            decisions += outcome.decisions
            if outcome.confirmation:
                return Draft(outcome.confirmation, [], decisions, prompt, usage, escalated=False)
            if outcome.results:
                answered_by_action = True
                evidence = [*screened.chunks, *result_chunks(outcome.results)]
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
        if declined is not None and not answered_by_action:
            return self._not_covered(turn, [*decisions, declined], none_streak)
        if self._extract_first and extractive is not None and not answered_by_action:
            # The model was asked for its actions only; the passage's own sentences answer.
            final = guardrails.extracted_answer(extractive)
            decisions += final.decisions
            return self._checked(
                turn, final.text, final.citations, decisions, prompt, usage, failed_streak, screened.chunks
            )
        final = guardrails.finalize_answer(
            answer=answer, context=evidence, persona=brand.persona, extractive=extractive
        )
        decisions += final.decisions
        return self._checked(
            turn, final.text, list(final.citations), decisions, prompt, usage, failed_streak, evidence
        )

    async def _generate(self, request: ChatRequest) -> ChatResponse:
        """One chat completion in an ``llm.chat`` span; tokens and latency counted by model.

        Streamed when this draft has a ``progress`` (web chat with a streaming model): the text so far is
        passed on, up to where an action block could begin, so no action JSON reaches the customer."""
        started = time.perf_counter()
        progress = _PROGRESS.get()
        with stage("llm.chat", stage_label="llm", messages=len(request.messages)) as span:
            if progress is not None and self._stream is not None:
                usage = await self._streamed(request, progress, started)
            else:
                usage = await self._chat(request)
            span.set_attribute("model", usage.model)
            span.set_attribute("prompt_tokens", usage.prompt_tokens)
            span.set_attribute("completion_tokens", usage.completion_tokens)
        metrics.observe("ema_llm_latency_seconds", time.perf_counter() - started, model=usage.model)
        metrics.inc("ema_llm_tokens_total", usage.prompt_tokens, model=usage.model, kind="prompt")
        metrics.inc("ema_llm_tokens_total", usage.completion_tokens, model=usage.model, kind="completion")
        return usage

    async def _streamed(self, request: ChatRequest, progress: ProgressFn, started: float) -> ChatResponse:
        """The completion through ``stream``; a stream that fails before any text falls back to ``chat``."""
        assert self._stream is not None
        text = ""
        try:
            async for delta in self._stream(request):
                text += delta
                visible = visible_draft(text)
                if visible:
                    await progress(visible)
        except LLMError:
            if text:
                raise  # replaying would write what the customer already saw a second time
            return await self._chat(request)
        # Streams carry no usage here: tokens are estimated as the tokenizer-free ~4 characters each.
        return ChatResponse(
            text=text,
            model=self._settings.llm.model,
            prompt_tokens=sum(len(m.content) for m in request.messages) // 4,
            completion_tokens=len(text) // 4,
            latency_ms=(time.perf_counter() - started) * 1000,
            finish_reason="stop",
        )

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
        turn: Turn,
        context: ActionContext,
        key: uuid.UUID,
        decisions: list[GuardrailDecision],
        exc: LLMError,
        failed_streak: int,
    ) -> Draft:
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
        turn: Turn,
        text: str,
        citations: list[Citation],
        decisions: list[GuardrailDecision],
        prompt: list[ChatMessage] | None,
        usage: ChatResponse | None,
        failed_streak: int,
        passages: Sequence[RetrievedChunk] = (),
    ) -> Draft:
        """Output guardrails (personal data, toxicity) and the repeated-failure trigger.

        Personal data is masked unless this customer wrote it or a cited passage states it: a store's
        address or phone number in the brand's own knowledge is an answer, not a leak.
        """
        cited = {c.chunk_id for c in citations}
        published = [p.text for p in passages if p.chunk_id in cited]
        allowed_pii = guardrails.customer_pii([*turn.customer_texts, turn.message.text, *published])
        out = guardrails.check_output(text, allowed_pii=allowed_pii, persona=turn.brand.persona)
        decisions = [*decisions, *out.decisions]
        if out.toxic and self._settings.escalation.on_toxicity:
            return self._handoff(turn, [*decisions, escalation.decision("guardrail", "toxic answer blocked")])
        failed_now = any((d.rule, d.action) in escalation.FAILED_OUTCOMES for d in decisions)
        if failed_now and failed_streak + 1 >= self._settings.escalation.failed_answers:
            reason = f"{failed_streak + 1} failed answers in a row"
            return self._handoff(turn, [*decisions, escalation.decision("failed_answers", reason)])
        return Draft(out.text, citations if not out.toxic else [], decisions, prompt, usage, escalated=False)

    def _unreadable(self, turn: Turn, media: MediaOutcome) -> Draft:
        """Media with nothing to answer: the persona says so and a person takes over (the agent sees it)."""
        persona = turn.brand.persona
        text = persona.media_message
        if media.too_large:
            limit = self._settings.media.max_bytes / 1_000_000
            text = (
                f"Sorry, that file is too large for me to receive (the limit is {limit:.0f} MB). "
                f"{persona.escalation_message}"
            )
        return self._handoff(turn, [escalation.decision("media", media.reason)], text)

    @staticmethod
    def _handoff(turn: Turn, decisions: list[GuardrailDecision], text: str | None = None) -> Draft:
        """Tell the customer in the persona's words; the state change is written with the reply."""
        reply = text or turn.brand.persona.escalation_message
        return Draft(reply, [], decisions, None, None, escalated=True, handoff=True)


def visible_draft(text: str) -> str:
    """What of a model's partial text may be shown: up to where an action block could begin."""
    match = _ACTION_START.search(text)
    return (text[: match.start()] if match else text).strip()


def result_chunks(results: list[tuple[str, ActionResult]]) -> list[RetrievedChunk]:
    """Action results as context passages, so the final answer is checked against them too."""
    return [
        RetrievedChunk(
            chunk_id=f"action:{name}:{i}", text=r.summary, source=f"action:{name}", heading_path="", score=1.0
        )
        for i, (name, r) in enumerate(results, start=1)
    ]


def as_chat(row: Any) -> ChatMessage:
    if row.direction == Direction.INBOUND:
        return ChatMessage(role="user", content=row.text)
    return ChatMessage(role="assistant", content=row.text)
