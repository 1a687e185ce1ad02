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

from common.conversation import safety
from common.domain import Citation, GuardrailDecision, Persona
from common.schemas import RetrievedChunk

RULE = "groundedness"
DEFAULT_MIN_SUPPORT = 0.6
#: A chunk supports a sentence when it holds at least this share of the sentence's content words.
MIN_CHUNK_SHARE = 0.3
#: A sentence is backed when its best chunk holds this share of its content words ...
MIN_SENTENCE_WORD_SHARE = 0.6
#: ... and this share of its consecutive content-word pairs (word order, not just vocabulary).
MIN_SENTENCE_PAIR_SHARE = 0.3
#: Passages scoring more than this below the best one are off-topic for the question (cosine scale).
ON_TOPIC_MARGIN = 0.1
#: Sentences with fewer content words than this carry no checkable claim of their own.
MIN_SUBSTANTIVE_WORDS = 3
_PROMPT_ECHO = re.compile(r"</?context>|^\s*\[\d+\]\s*\(", re.MULTILINE)
QUOTE_MAX_CHARS = 300

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)

_STOPWORD_TEXT = """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each either else etc ever every
    few for from further get gets got had has have having he her here hers herself him himself his how
    i if in into is it its itself just let like may me might more most much must my myself no nor not
    now of off on once one only or other our ours ourselves out over own per please same shall she
    should so some such than that the their theirs them themselves then there these they this those
    through to too under until up upon us very was we were what when where which while who whom why
    will with within would yes yet you your yours yourself yourselves sure thanks thank hi hello
    happy help hope great glad know let's i'm you're it's that's there's we're don't can't
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


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
            and not self.unbacked_sentences
            and self.support >= min_support
        )


@dataclass(frozen=True)
class FinalAnswer:
    """The reply text to send, what it cites, and what the guardrails decided."""

    text: str
    citations: list[Citation]
    decisions: list[GuardrailDecision]


def content_words(text: str) -> set[str]:
    """Lower-cased words minus stopwords, plurals folded (``returns`` → ``return``)."""
    words = set()
    for raw in _WORD.findall(text.lower()):
        if raw in STOPWORDS or len(raw) < 2:
            continue
        words.add(_fold(raw))
    return words


def numbers(text: str) -> set[str]:
    """Numbers with thousands separators and trailing punctuation normalised (``1,000`` → ``1000``)."""
    found = set()
    for raw in _NUMBER.findall(text):
        value = raw.replace(",", "") if re.fullmatch(r"\d{1,3}(?:,\d{3})+", raw) else raw
        value = value.rstrip(".,")
        found.add(re.sub(r"\.0+$", "", value))
    return found


def on_topic(context: list[RetrievedChunk]) -> list[RetrievedChunk]:
    """The passages retrieval ranked close to the best one for the question.

    Only these may back an answer: a sentence copied from a lower-ranked passage is a true statement
    about something else (seen: "3 business days" for a returns question, from the warranty passage).
    """
    if not context:
        return context
    best = max(c.score for c in context)
    return [c for c in context if c.score >= best - ON_TOPIC_MARGIN]


def check_grounded(answer: str, context: list[RetrievedChunk]) -> GroundednessReport:
    """Score how much of ``answer`` the on-topic ``context`` supports, sentence by sentence."""
    context = on_topic(context)
    chunk_words = [(chunk, content_words(chunk.text + " " + chunk.heading_path)) for chunk in context]
    all_words = set().union(*(words for _, words in chunk_words))
    context_numbers = set().union(*(numbers(f"{c.text} {c.heading_path}") for c in context))
    anchors = _number_anchors(context)
    sentences = tuple(
        _sentence_support(
            s, chunk_words=chunk_words, all_words=all_words, context_numbers=context_numbers, anchors=anchors
        )
        for s in _sentences(answer)
    )
    total = sum(s.content_words for s in sentences)
    backed = sum(0 if s.unsupported_numbers else s.supported_words for s in sentences)
    empty = total == 0 and not any(numbers(s.text) for s in sentences)
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
    )


def finalize_answer(
    *,
    answer: str,
    context: list[RetrievedChunk],
    persona: Persona,
    min_support: float = DEFAULT_MIN_SUPPORT,
) -> FinalAnswer:
    """Pass a grounded answer with citations, quote the best passage instead of an ungrounded one, escalate
    when there is no context at all."""
    if not context:
        text = f"{persona.fallback_message} {persona.escalation_message}".strip()
        return FinalAnswer(text, [], [GuardrailDecision(RULE, "escalate", "no relevant knowledge")])
    cleaned = _strip_persona_phrases(answer, persona)
    report = check_grounded(cleaned, context)
    if report.passes(min_support):
        by_id = {c.chunk_id: c for c in context}
        citations = [_citation(by_id[i]) for i in report.supporting_chunk_ids]
        reason = f"support={report.support:.2f}"
        return FinalAnswer(answer.strip(), citations, [GuardrailDecision(RULE, "pass", reason)])
    best = _best_passage(context)
    decision = GuardrailDecision(RULE, "replace", _why(report, answer=answer))
    return FinalAnswer(_quote(best), [_citation(best)], [decision])


def _sentence_support(
    text: str,
    *,
    chunk_words: list[tuple[RetrievedChunk, set[str]]],
    all_words: set[str],
    context_numbers: set[str],
    anchors: set[tuple[str, str]] | None = None,
) -> SentenceSupport:
    words = content_words(text)
    missing = numbers(text) - context_numbers
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


def _tokens(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())


def _number_anchors(context: list[RetrievedChunk]) -> set[tuple[str, str]]:
    """(neighbour, number) and (number, neighbour) token pairs of every number in the context."""
    anchors: set[tuple[str, str]] = set()
    for chunk in context:
        toks = _tokens(f"{chunk.heading_path} {chunk.text}")
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
    toks = _tokens(text)
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
    seq = [_fold(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) >= 2]
    return set(itertools.pairwise(seq))


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _fold(word: str) -> str:
    word = word.removesuffix("'s")
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


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


def _quote(chunk: RetrievedChunk) -> str:
    where = f"{chunk.source} ({chunk.heading_path})" if chunk.heading_path else chunk.source
    return f"Here's what I found in {where}: {_shorten(chunk.text)}"


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
