"""Output guardrails. First rule: groundedness — an answer is sent as fact only when the context backs it.

Support is lexical and per sentence: a sentence is backed when one retrieved chunk holds most of its
content words (stopwords removed, light plural folding) *and* enough of its consecutive content-word
pairs, so a small model that recombines context words into a new claim ("items must be used ...") is
not mistaken for one that states the context. Every number in a sentence must appear in the context.
One substantive unsupported sentence makes the whole answer unsupported; an answer that echoes the
prompt's context markup is unsupported. Cheap, deterministic and explainable; it catches invented
figures, recombined claims and off-context answers, not every subtle paraphrase error.

An unsupported (or empty) answer is replaced by a quote of the best passage with its source; no context
at all means the persona's fallback plus an escalation to a human.

The pipeline's other guardrails are wired here from :mod:`common.conversation.safety` (which implements
the checks),
each turned into a recorded ``GuardrailDecision``:

* input — :func:`check_input`: a prompt-injection attempt never reaches the LLM (safe reply instead);
  toxic input is flagged for escalation;
* retrieved context — :func:`screen_context`: every passage goes through ``neutralize_context`` (documents
  are data, never instructions); a passage that carried instructions *taints* the turn, and a tainted turn
  runs no actions (see :mod:`common.conversation.actions.engine`);
* output — :func:`check_output`: personal data is masked except values this customer supplied in this
  conversation, and a toxic answer is replaced by the persona's fallback.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common import text as text_
from common.conversation import answering, safety
from common.domain import Citation, GuardrailDecision, Persona
from common.schemas import RetrievedChunk

if TYPE_CHECKING:
    from common.conversation.answering import Selection

RULE = "groundedness"
#: The decision recorded for an answer sentence that contradicts its passage.
CONTRADICTION_RULE = "contradiction"
DEFAULT_MIN_SUPPORT = 0.6
#: A chunk supports a sentence when it holds at least this share of the sentence's content words.
MIN_CHUNK_SHARE = 0.3
#: A sentence is backed when its best chunk holds this share of its content words ...
MIN_SENTENCE_WORD_SHARE = 0.6
#: ... and this share of its consecutive content-word pairs (word order, not just vocabulary).
MIN_SENTENCE_PAIR_SHARE = 0.3
#: Passages scoring more than this below the best one are off-topic for the question (cosine scale).
ON_TOPIC_MARGIN = 0.1
#: An answer needs one sentence with this many content words (or a number) to say anything at all.
MIN_CLAIM_WORDS = 2
#: Sentences with fewer content words than this carry no checkable claim of their own.
MIN_SUBSTANTIVE_WORDS = 3
_PROMPT_ECHO = re.compile(r"</?context>|^\s*\[\d+\]\s*\(", re.MULTILINE)
QUOTE_MAX_CHARS = 300


@dataclass(frozen=True)
class SentenceSupport:
    """How well one answer sentence is backed by the context."""

    text: str
    content_words: int
    supported_words: int
    unsupported_numbers: tuple[str, ...]
    chunk_ids: tuple[str, ...]
    best_chunk_share: float = 1.0
    pair_share: float = 1.0

    @property
    def backed(self) -> bool:
        """One chunk states this sentence (vocabulary and word order), numbers included."""
        if self.unsupported_numbers:
            return False
        if self.content_words < MIN_SUBSTANTIVE_WORDS:
            return True
        return self.best_chunk_share >= MIN_SENTENCE_WORD_SHARE and self.pair_share >= MIN_SENTENCE_PAIR_SHARE

    @property
    def score(self) -> float:
        """Share of content words found in the context; 0 when a number is not in the context."""
        if self.unsupported_numbers:
            return 0.0
        return self.supported_words / self.content_words if self.content_words else 1.0


@dataclass(frozen=True)
class GroundednessReport:
    """What :func:`check_grounded` found."""

    support: float
    sentences: tuple[SentenceSupport, ...]
    supporting_chunk_ids: tuple[str, ...]
    unsupported_numbers: tuple[str, ...]
    empty: bool
    echoes_prompt: bool = False
    contradictions: tuple[str, ...] = ()

    @property
    def unbacked_sentences(self) -> tuple[SentenceSupport, ...]:
        """Substantive sentences no single chunk states."""
        return tuple(s for s in self.sentences if not s.backed)

    def passes(self, min_support: float) -> bool:
        """Grounded enough to send as fact."""
        return (
            not self.empty
            and not self.echoes_prompt
            and not self.unsupported_numbers
            and not self.contradictions
            and not self.unbacked_sentences
            and self.support >= min_support
        )


@dataclass(frozen=True)
class FinalAnswer:
    """The reply text to send, what it cites, and what the guardrails decided."""

    text: str
    citations: list[Citation]
    decisions: list[GuardrailDecision]


def on_topic(context: list[RetrievedChunk]) -> list[RetrievedChunk]:
    """The passages retrieval ranked close to the best one for the question.

    Only these may back an answer: a sentence copied from a lower-ranked passage is a true statement
    about something else (seen: "3 business days" for a returns question, from the warranty passage).
    """
    if not context:
        return context
    best = max(c.score for c in context)
    return [c for c in context if c.score >= best - ON_TOPIC_MARGIN]


def check_grounded(
    answer: str, context: list[RetrievedChunk], *, allowed_names: frozenset[str] = frozenset()
) -> GroundednessReport:
    """Score how much of ``answer`` the on-topic ``context`` supports, sentence by sentence, and find the
    sentences that contradict it (see :func:`contradiction`)."""
    context = on_topic(context)
    chunk_words = [(chunk, text_.content_words(chunk.text + " " + chunk.heading_path)) for chunk in context]
    all_words = set().union(*(words for _, words in chunk_words))
    context_numbers = set().union(*(text_.numbers(f"{c.text} {c.heading_path}") for c in context))
    anchors = _number_anchors(context)
    sentences = tuple(
        _sentence_support(
            s, chunk_words=chunk_words, all_words=all_words, context_numbers=context_numbers, anchors=anchors
        )
        for s in text_.sentences(answer)
    )
    total = sum(s.content_words for s in sentences)
    backed = sum(0 if s.unsupported_numbers else s.supported_words for s in sentences)
    # No claim to check: nothing but short phrases ("Yes, to Canada.") or questions back to the customer.
    claims = [
        s
        for s in sentences
        if not s.text.rstrip().endswith("?") and (s.content_words >= MIN_CLAIM_WORDS or text_.numbers(s.text))
    ]
    empty = not claims
    supporting: dict[str, None] = {}
    for sentence in sentences:
        supporting.update(dict.fromkeys(sentence.chunk_ids))
    return GroundednessReport(
        support=backed / total if total else 0.0,
        sentences=sentences,
        supporting_chunk_ids=tuple(supporting),
        unsupported_numbers=tuple(n for s in sentences for n in s.unsupported_numbers),
        empty=empty,
        echoes_prompt=bool(_PROMPT_ECHO.search(answer)),
        contradictions=tuple(
            found for s in sentences if (found := contradiction(s.text, context, allowed_names=allowed_names))
        ),
    )


def finalize_answer(
    *,
    answer: str,
    context: list[RetrievedChunk],
    persona: Persona,
    min_support: float = DEFAULT_MIN_SUPPORT,
    extractive: Selection | None = None,
) -> FinalAnswer:
    """Pass a grounded answer with citations; replace an ungrounded or contradicting one by the extractive
    answer (``extractive``: the passage sentences that answer the question, see
    :mod:`common.conversation.answering`); escalate when there is no context at all.

    A contradiction (polarity, a quantity's unit or a name disagreeing with the passage) is recorded as
    its own ``contradiction``/``reject`` decision, so it can be counted. Citations travel separately:
    the reply text never names a source URI.
    """
    if not context:
        text = f"{persona.fallback_message} {persona.escalation_message}".strip()
        return FinalAnswer(text, [], [GuardrailDecision(RULE, "escalate", "no relevant knowledge")])
    cleaned = _strip_persona_phrases(answer, persona)
    report = check_grounded(cleaned, context, allowed_names=persona_names(persona))
    if report.passes(min_support):
        by_id = {c.chunk_id: c for c in context}
        citations = [_citation(by_id[i]) for i in report.supporting_chunk_ids]
        reason = f"support={report.support:.2f}"
        return FinalAnswer(answer.strip(), citations, [GuardrailDecision(RULE, "pass", reason)])
    decisions = [GuardrailDecision(CONTRADICTION_RULE, "reject", c) for c in report.contradictions]
    if extractive is not None:
        chunks, text = extractive.chunks, extractive.text
    else:
        chunks = (_best_passage(context),)
        text = _shorten(answering.clean(chunks[0].text))
    decisions.append(GuardrailDecision(RULE, "replace", _why(report, answer=answer)))
    return FinalAnswer(text, [_citation(c) for c in chunks], decisions)


def extracted_answer(selection: Selection) -> FinalAnswer:
    """The passage sentences themselves as the answer (``answers.mode = extract``): stated by construction."""
    decision = GuardrailDecision(RULE, "pass", f"extractive answer, score={selection.score:.2f}")
    return FinalAnswer(selection.text, [_citation(c) for c in selection.chunks], [decision])


def persona_names(persona: Persona) -> frozenset[str]:
    """Names the persona's own wording uses (the brand's name): an answer may say them."""
    phrases = (persona.greeting, persona.sign_off, persona.escalation_message, persona.fallback_message)
    return frozenset(text_.content_words(" ".join(p for p in phrases if p)))


def contradiction(
    sentence: str, context: list[RetrievedChunk], *, allowed_names: frozenset[str] = frozenset()
) -> str | None:
    """Why ``sentence`` disagrees with the passage sentence that states the same thing, if it does.

    The passage sentence compared is the one sharing the most content words with ``sentence`` (ties go
    to one that agrees). Three disagreements count:

    * **polarity** — a shared word is negated on one side only ("we accept cryptocurrency" against "we
      do not accept cash, checks or cryptocurrency");
    * **quantity** — a number stated with a unit or currency that the context never gives it ("30 days"
      where the passages say "30 hours", "$39" where they say "€39");
    * **name** — a capitalised name (store, city, product, plan) that no on-topic passage contains.
    """
    on = on_topic(context)
    vocabulary = (
        set().union(*(text_.content_words(f"{c.heading_path} {c.text}") for c in on)) if on else set()
    )
    invented = sorted(text_.names(sentence) - vocabulary - allowed_names)
    if invented:
        return f"names not in the passages: {', '.join(invented)}: {sentence[:80]!r}"
    quantity = _quantity_mismatch(sentence, on)
    if quantity:
        return f"{quantity}: {sentence[:80]!r}"
    said = {text_.stem(w) for w in text_.content_words(sentence)}
    said_negated = {text_.stem(w) for w in text_.negated_words(sentence)}
    best: tuple[int, int, str, set[str]] | None = None
    for chunk in on:
        for passage in text_.passage_sentences(chunk.text):
            stated = {text_.stem(w) for w in text_.content_words(passage)}
            shared = said & stated
            if len(shared) < 2 and len(shared) < len(said):
                continue
            negated = {text_.stem(w) for w in text_.negated_words(passage)}
            flipped = {w for w in shared if (w in said_negated) != (w in negated)}
            rank = (len(shared), -len(flipped))
            if best is None or rank > best[:2]:
                best = (*rank, passage, flipped)
    if best is not None and best[3]:
        return f"polarity of {', '.join(sorted(best[3]))} differs from {best[2][:80]!r}"
    return None


def _quantity_mismatch(sentence: str, context: list[RetrievedChunk]) -> str | None:
    stated: dict[str, set[str]] = {}
    for chunk in context:
        for number, unit in text_.quantities(f"{chunk.heading_path} {chunk.text}"):
            stated.setdefault(number, set()).add(unit)
    for number, unit in sorted(text_.quantities(sentence)):
        units = stated.get(number)
        if units and unit not in units:
            return f"{number} {unit} where the passages say {number} {'/'.join(sorted(units))}"
    return None


def _sentence_support(
    text: str,
    *,
    chunk_words: list[tuple[RetrievedChunk, set[str]]],
    all_words: set[str],
    context_numbers: set[str],
    anchors: set[tuple[str, str]] | None = None,
) -> SentenceSupport:
    words = text_.content_words(text)
    missing = text_.numbers(text) - context_numbers
    if anchors is not None:
        missing |= _unanchored_numbers(text, anchors)
    missing_numbers = tuple(sorted(missing))
    chunk_ids = tuple(
        chunk.chunk_id
        for chunk, cwords in chunk_words
        if words and len(words & cwords) / len(words) >= MIN_CHUNK_SHARE
    )
    best_share, pair_share = 0.0, 0.0
    if words and chunk_words:
        best, best_words = max(chunk_words, key=lambda cw: (len(words & cw[1]), cw[0].score))
        best_share = len(words & best_words) / len(words)
        pairs = _pairs(text)
        best_pairs = _pairs(f"{best.heading_path} {best.text}")
        pair_share = len(pairs & best_pairs) / len(pairs) if pairs else 1.0
    return SentenceSupport(
        text=text,
        content_words=len(words),
        supported_words=len(words & all_words),
        unsupported_numbers=missing_numbers,
        chunk_ids=() if missing_numbers else chunk_ids,
        best_chunk_share=best_share,
        pair_share=pair_share,
    )


def _number_anchors(context: list[RetrievedChunk]) -> set[tuple[str, str]]:
    """(neighbour, number) and (number, neighbour) token pairs of every number in the context."""
    anchors: set[tuple[str, str]] = set()
    for chunk in context:
        toks = text_.tokens(f"{chunk.heading_path} {chunk.text}")
        for i, tok in enumerate(toks):
            if tok.isdigit():
                if i > 0:
                    anchors.add((toks[i - 1], tok))
                if i + 1 < len(toks):
                    anchors.add((tok, toks[i + 1]))
    return anchors


def _unanchored_numbers(text: str, anchors: set[tuple[str, str]]) -> set[str]:
    """Numbers whose word on neither side matches a context occurrence of that number.

    A figure must be stated *as* the context states it: "within 3 business days" is not backed by
    "another 3-7 business days" even though "3", "business" and "days" all occur there.
    """
    toks = text_.tokens(text)
    found: set[str] = set()
    for i, tok in enumerate(toks):
        if not tok.isdigit():
            continue
        before = i > 0 and (toks[i - 1], tok) in anchors
        after = i + 1 < len(toks) and (tok, toks[i + 1]) in anchors
        alone = len(toks) == 1
        if not (before or after or alone):
            found.add(tok)
    return found


def _pairs(text: str) -> set[tuple[str, str]]:
    """Consecutive content words (stopwords skipped), as a cheap word-order signal."""
    return set(itertools.pairwise(text_.content_sequence(text)))


def _strip_persona_phrases(answer: str, persona: Persona) -> str:
    """Greeting, sign-off and the escalation/fallback wording are the persona's words, not claims to check."""
    for phrase in (persona.sign_off, persona.greeting, persona.escalation_message, persona.fallback_message):
        if phrase:
            answer = answer.replace(phrase, " ")
    return answer


def _best_passage(context: list[RetrievedChunk]) -> RetrievedChunk:
    """The passage retrieval ranked first for the question.

    The attempted answer failed the check, so its wording is no guide to the right passage.
    """
    return max(context, key=lambda c: c.score)


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= QUOTE_MAX_CHARS:
        return text
    cut = text[:QUOTE_MAX_CHARS]
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    if end >= QUOTE_MAX_CHARS // 2:
        return cut[: end + 1]
    return cut.rsplit(" ", 1)[0] + "…"


def _citation(chunk: RetrievedChunk) -> Citation:
    return Citation(
        chunk_id=chunk.chunk_id, source=chunk.source, heading_path=chunk.heading_path, score=chunk.score
    )


def _why(report: GroundednessReport, *, answer: str) -> str:
    if not answer.strip():
        return "empty answer"
    if report.empty:
        return "no checkable claims in the answer"
    if report.echoes_prompt:
        return "answer echoes the prompt's context markup"
    if report.contradictions:
        return f"{len(report.contradictions)} sentence(s) contradict the passages"
    if report.unsupported_numbers:
        return f"numbers not in context: {', '.join(report.unsupported_numbers)}"
    if report.unbacked_sentences:
        return f"{len(report.unbacked_sentences)} sentence(s) not stated by any retrieved passage"
    return f"support={report.support:.2f} below threshold"


# --- safety wiring: input, retrieved context, output -----------------------------------------------

CONTEXT_RULE = "indirect_injection"
OUTPUT_TOXICITY_RULE = "toxicity_output"


@dataclass(frozen=True)
class InputCheck:
    """What the input guardrails decided about the customer's message."""

    decisions: tuple[GuardrailDecision, ...]
    injection: bool
    toxic: bool


@dataclass(frozen=True)
class ScreenedContext:
    """Retrieved passages made safe to show the model, and whether any carried instructions."""

    chunks: list[RetrievedChunk]
    tainted: bool
    decisions: tuple[GuardrailDecision, ...]


@dataclass(frozen=True)
class OutputCheck:
    """The reply after masking and the toxicity check."""

    text: str
    decisions: tuple[GuardrailDecision, ...]
    toxic: bool


def check_input(text: str) -> InputCheck:
    """Prompt injection and toxicity of the customer's message (only non-pass decisions are kept)."""
    injection = safety.detect_injection(text)
    toxicity = safety.check_toxicity(text)
    decisions = []
    if injection.is_injection:
        decisions.append(injection.decision())
    if toxicity.is_toxic:
        decisions.append(toxicity.decision(action="escalate"))
    return InputCheck(tuple(decisions), injection.is_injection, toxicity.is_toxic)


def screen_context(chunks: Iterable[RetrievedChunk]) -> ScreenedContext:
    """Neutralise every passage; flag the turn when any passage carried instructions."""
    screened: list[RetrievedChunk] = []
    flagged: list[str] = []
    for chunk in chunks:
        if safety.context_has_instructions(chunk.text):
            flagged.append(chunk.chunk_id)
        screened.append(chunk.model_copy(update={"text": safety.neutralize_context(chunk.text)}))
    decisions: tuple[GuardrailDecision, ...] = ()
    if flagged:
        reason = f"instructions in retrieved passages {', '.join(flagged)}: neutralised, no actions"
        decisions = (GuardrailDecision(CONTEXT_RULE, "neutralize", reason),)
    return ScreenedContext(screened, bool(flagged), decisions)


def customer_pii(texts: Iterable[str]) -> tuple[str, ...]:
    """Personal data values the customer wrote themselves (they may be repeated back to them)."""
    return safety.customer_values(texts)


def check_output(text: str, *, allowed_pii: Iterable[str], persona: Persona) -> OutputCheck:
    """Mask personal data the customer did not supply; replace a toxic reply with the fallback."""
    toxicity = safety.check_toxicity(text)
    if toxicity.is_toxic:
        decision = GuardrailDecision(OUTPUT_TOXICITY_RULE, "replace", f"terms={','.join(toxicity.terms)}")
        return OutputCheck(persona.fallback_message, (decision,), toxic=True)
    masked = safety.mask_pii(text, allowed=tuple(allowed_pii))
    decisions = (masked.decision(),) if masked.masked_kinds else ()
    return OutputCheck(masked.text, decisions, toxic=False)


def redact(text: str) -> str:
    """Audit copy of a text (stored prompts) with personal data removed."""
    return safety.redact_for_audit(text)
