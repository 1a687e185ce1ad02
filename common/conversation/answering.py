"""Answering from the passages themselves: follow-up queries, sentence selection, answerability.

Three decisions a grounded assistant makes whatever its language model is:

* **what to search for** — :func:`retrieval_query`: a follow-up ("and to Canada?") is searched together
  with the customer's previous message, so retrieval sees what the question is about;
* **whether the knowledge covers the question** — :func:`assess`: the question's key terms must be found
  in the retrieved passages (typos tolerated) and one passage sentence must answer it closely enough,
  else the brand's fallback and a person are offered instead of an unrelated quote;
* **which sentences answer it** — :func:`select`: every sentence of the retrieved passages is scored
  against the question (cosine of their embeddings, by the model the knowledge replica already holds,
  plus the weighted share of the question's key terms it contains) and the best one, with the neighbours
  that complete it, becomes the extractive answer: the reply with the embedded model, and what replaces
  a configured model's answer that the groundedness guard rejects.

Thresholds live in :class:`common.config.AnswerSettings` and were calibrated on the dev split of the
labelled sets in ``tests/eval/answers/`` (``make eval-answers``; docs/QUALITY.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from common import text as words
from common.schemas import RetrievedChunk

#: The guardrail decision recorded when a question is declined as not covered by the knowledge.
RULE = "answerability"
#: Words that frame a question without saying what it is about ("do you offer ...", "how long ...").
_FRAMING_TEXT = """
    offer offered provide provided have sell sold available possible allowed get make tell need want
    like take long much many kind type way anything something someone anyone ask question
    information info thing stuff able there work does go come
"""
FRAMING = frozenset(_FRAMING_TEXT.split())
#: How a follow-up starts when it leans on the previous message.
FOLLOWUP_LEADS = ("and ", "what about", "how about", "also ", "or ", "same ", "what if", "plus ", "but ")
#: A message that points back ("it", "there") and names at most this many things is a follow-up.
FOLLOWUP_MAX_TERMS = 3
ANAPHORS = frozenset(("it", "its", "that", "this", "those", "these", "them", "they", "there", "one", "ones"))
#: Sentences joined into one extractive answer, and its length budget (characters).
MAX_SENTENCES = 3
MAX_CHARS = 300
#: A neighbour of the best sentence joins the answer when it scores at least this close to it.
NEIGHBOUR_MARGIN = 0.25
_MARKUP = re.compile(r"\*\*|__|`|^#+\s*", re.MULTILINE)
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")


@dataclass(frozen=True)
class Candidate:
    """One sentence (or list item, or table row) of a retrieved passage."""

    chunk: RetrievedChunk
    position: int
    text: str

    @property
    def embed_text(self) -> str:
        """What is embedded: the heading path carries the topic a short sentence leaves implicit."""
        return f"{self.chunk.heading_path}: {self.text}" if self.chunk.heading_path else self.text


@dataclass(frozen=True)
class Scored:
    """A candidate with its similarity to the question."""

    candidate: Candidate
    semantic: float
    lexical: float
    lexical_weight: float

    gives: frozenset[str] = frozenset()  # the kinds of answer asked for that it holds (a price, ...)
    coverage: float = 0.0  # the key-term coverage before a table row's key penalty

    @property
    def typed(self) -> float:
        """The bonus for giving the kind of answer the question asks for."""
        return TYPE_BONUS if self.gives else 0.0

    @property
    def score(self) -> float:
        """How well the sentence matches the question (what answerability reads)."""
        return self.semantic + self.lexical_weight * self.lexical

    @property
    def rank(self) -> float:
        """What answer selection orders by: the score plus the answer-type bonus."""
        return self.score + self.typed


@dataclass(frozen=True)
class Selection:
    """The extractive answer: sentences of one passage, in document order (or, for a "which ..."
    question over a table, the rows that match, each of which is cited: ``also``)."""

    text: str
    chunk: RetrievedChunk
    score: float
    also: tuple[RetrievedChunk, ...] = ()

    @property
    def chunks(self) -> tuple[RetrievedChunk, ...]:
        """Every passage the answer states something of (its citations)."""
        return (self.chunk, *self.also)


@dataclass(frozen=True)
class Answerability:
    """Whether the retrieved passages cover the question, and why not."""

    answerable: bool
    reason: str
    uncovered: tuple[str, ...] = ()
    best_score: float = 0.0
    best_semantic: float = 0.0
    uncovered_share: float = 0.0
    names: tuple[str, ...] = ()

    @property
    def figures(self) -> str:
        """The measured values, for the decision's reason (and the calibration in ``bench.answers``)."""
        return (
            f"best={self.best_score:.3f} semantic={self.best_semantic:.3f} "
            f"uncovered={self.uncovered_share:.3f} names={len(self.names)}"
        )


def key_terms(question: str) -> set[str]:
    """Content words of the question without the words that only frame it."""
    return {w for w in words.content_words(question) if w not in FRAMING and w not in words.STOPWORDS}


def is_followup(text: str) -> bool:
    """A message that leans on the previous one: "and to Canada?", "what about tents?", "is it free?".

    It starts like a continuation, names at most one thing, or points back ("it", "there") while naming
    few things itself.
    """
    lowered = " ".join(text.lower().split())
    terms = key_terms(text)
    if lowered.startswith(FOLLOWUP_LEADS) or len(terms) <= 1:
        return True
    return bool(ANAPHORS & set(words.words(lowered))) and len(terms) <= FOLLOWUP_MAX_TERMS


def retrieval_query(text: str, earlier_customer_texts: Sequence[str]) -> str:
    """What retrieval searches for: the message, with the previous customer message for a follow-up."""
    if not earlier_customer_texts or not is_followup(text):
        return text
    return f"{followup_context(earlier_customer_texts[-1], text)} {text}"


def followup_context(earlier: str, text: str) -> str:
    """What a follow-up keeps of the message it follows.

    "and at Seaport?" after "What are the opening hours at Back Bay?" asks the same about another
    place: a follow-up that names things of its own and points back at nothing replaces the names of
    the earlier message ("Back Bay" is dropped, "opening hours" kept). "how much does it cost" keeps
    everything: "it" is the earlier message's subject.
    """
    pointing = bool(ANAPHORS & set(words.words(text.lower())))
    if pointing or not key_terms(text):
        return earlier
    dropped = words.names(earlier)
    if not dropped:
        return earlier
    kept = [w for w in re.findall(r"\S+", earlier) if words.fold(re.sub(r"\W", "", w).lower()) not in dropped]
    return " ".join(kept)


def clean(text: str) -> str:
    """Passage text as a customer should read it: Markdown emphasis, code ticks and link targets gone."""
    return _MARKUP.sub("", _LINK.sub(r"\1", text)).strip()


def candidates(chunks: Sequence[RetrievedChunk]) -> list[Candidate]:
    """Every answer-bearing sentence of ``chunks`` (a FAQ entry's question line is its heading)."""
    found: list[Candidate] = []
    for chunk in chunks:
        for position, sentence in enumerate(words.passage_sentences(chunk.text)):
            if sentence.startswith("Q: "):
                continue
            sentence = clean(sentence.removeprefix("A: "))
            if words.content_words(sentence) or words.numbers(sentence):
                found.append(Candidate(chunk, position, sentence))
    return found


def score(
    question: str,
    found: Sequence[Candidate],
    semantic: Sequence[float] | None,
    *,
    lexical_weight: float,
    earlier: str = "",
) -> list[Scored]:
    """Score each candidate: cosine to the question plus ``lexical_weight`` times key-term coverage.

    Coverage is IDF-weighted over the candidates (a term every sentence has says little); a term in the
    sentence counts fully, one only in its heading path half. For a follow-up, the terms of the message
    it follows (``earlier``) count half. A table row whose key (its first cell) names words the question
    does not ("Core Annual" for "the Core plan") loses a share of its coverage. Without embeddings
    (``semantic`` is None) the lexical part decides alone.
    """
    texts = [words.meaning_vocabulary(c.text) for c in found]
    # The question's numbers that some passage states count as terms ("under $75" picks the sentence
    # that says "$75"); an order number or an age is no topic the passages must cover.
    stated = set().union(*texts) if texts else set()
    figures = {n for n in words.numbers(question) if n in stated}
    terms = {t: 1.0 for t in (key_terms(question) or words.content_words(question)) | figures}
    for term in key_terms(earlier):
        terms.setdefault(term, 0.5)
    headings = [words.meaning_vocabulary(c.chunk.heading_path) for c in found]
    asked = words.vocabulary(f"{earlier} {question}")
    kinds = asks_for(question)
    phrases = words.phrase_keys(question)
    n = len(found)
    pairs = list(zip(texts, headings, strict=True))
    idf = {
        t: w * (math.log((n + 1) / (1 + sum(_mentions(t, a) or _mentions(t, b) for a, b in pairs))) + 1)
        for t, w in terms.items()
    }
    total = sum(idf.values()) or 1.0
    scored = []
    for i, cand in enumerate(found):
        hit = 0.0
        # "lost property" is answered by a sentence that says "items found": its words count as present.
        by_phrase = words.phrase_covered(phrases, texts[i])
        given = frozenset(kind for kind in kinds if gives(cand.text, {kind}))
        for kind in given:
            by_phrase |= TYPE_WORDS[kind]  # "what time": "3:00 pm" answers it without saying "time"
        for term in terms:
            if words.stem(term) in by_phrase or words.covered(term, texts[i]):
                hit += idf[term]
            elif words.covered(term, headings[i]):
                hit += idf[term] / 2
        lexical = coverage = hit / total
        key = _row_key(cand.text)
        if key:
            unasked = [w for w in key if not words.covered(w, asked)]
            lexical *= 1 - ROW_KEY_PENALTY * len(unasked) / len(key)
        scored.append(
            Scored(
                cand,
                semantic=float(semantic[i]) if semantic is not None else 0.0,
                lexical=lexical,
                lexical_weight=lexical_weight,
                gives=given,
                coverage=coverage,
            )
        )
    return scored


def _mentions(term: str, known: set[str]) -> bool:
    """``term`` or one of its synonyms is in ``known`` (no typo search: this runs for every pair)."""
    return words.stem(term) in known or not words.synonyms(term).isdisjoint(known)


#: What kind of answer a question asks for ("how long" → a duration) ...
_ASKS = {
    "duration": re.compile(
        r"\bhow (?:long|soon|quickly|fast)\b|\bhow many (?:days|weeks|hours|minutes|months|years|nights)\b"
    ),
    "money": re.compile(
        r"\bhow much\b|\b(?:cost|costs|price|prices|priced|fee|fees|charge|charges|rate|rates|pay|"
        r"expensive)\b"
    ),
    "clock": re.compile(
        r"\bwhat time\b|\bopening hours\b|\bhours\b|\bwhen (?:do|does|is|are)\b.*\b(?:open|opens|close|"
        r"closes|start|starts|served|serve|end|ends)\b"
    ),
    "address": re.compile(r"\baddress\b|\bwhere (?:is|are)\b|\bwhere's\b|\blocated\b|\bfind you\b"),
    "phone": re.compile(r"\bphone\b|\btelephone\b|\bcall you\b|\bnumber to call\b"),
    "email": re.compile(r"\be-?mail\b"),
    "count": re.compile(r"\bhow many\b"),
    "when": re.compile(r"^(?:and |so |but )?when\b|\bwhat day\b|\bwhich day\b|\bwhat date\b"),
}
#: Kinds a "when" question does not ask for although its words say them ("when are the fees taken?").
_NOT_WHEN = frozenset(("money", "count"))
_NUMBER_WORDS = r"(?:\d+(?:[.,]\d+)?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
#: ... and how a sentence that gives one looks.
_GIVES = {
    "duration": re.compile(
        _NUMBER_WORDS
        + r"(?:\s?(?:-|to|\u2013)\s?"
        + _NUMBER_WORDS
        + r")?\s?(?:business |working |calendar )?"
        r"(?:seconds?|minutes?|mins?|hours?|hrs?|days?|nights?|weeks?|months?|years?)\b|\bsame[- ]day\b|"
        r"\bovernight\b|\bnext[- ]day\b|\blifetime\b",
        re.I,
    ),
    "money": re.compile(r"[$€£¥]\s?\d|\d\s?(?:usd|eur|gbp|dollars?|euros?)\b|\bfree\b|%|\bno charge\b", re.I),
    "clock": re.compile(r"\b\d{1,2}:\d{2}\b|\b\d{1,2}\s?(?:am|pm|a\.m\.|p\.m\.)|\bnoon\b|\bmidnight\b", re.I),
    "address": re.compile(
        r"\b\d+[a-z]?\s+(?:[A-Z][\w'.-]*\s+){1,4}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Way|"
        r"Drive|Dr|Square|Sq|Place|Pl|Plaza|Parkway|Pkwy|Court|Ct|Highway|Hwy|Wharf|Pier|Row|Terrace)\b"
    ),
    "phone": re.compile(r"\+?\(?\d[\d\s().-]{7,}\d"),
    "email": re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+"),
    "count": re.compile(r"\b" + _NUMBER_WORDS + r"\b", re.I),
    "when": re.compile(
        r"\b\d{1,2}:\d{2}\b|\b\d{1,2}\s?(?:am|pm)\b|\b(?:mon|tues|wednes|thurs|fri|satur|sun)days?\b|"
        r"\b(?:january|february|march|april|may|june|july|august|september|october|november|december)\b|"
        r"\b\d{1,2}(?:st|nd|rd|th)\b|\b(?:daily|weekly|monthly|every day|each month|weekends?|weekdays?)\b|"
        r"\b(?:before|after|within|until|by)\b",
        re.I,
    ),
}
#: Words that only say which kind of answer is asked for: "what time" is answered by "3:00 pm", which
#: does not say "time"; they count as covered when a retrieved sentence gives that kind of answer.
TYPE_WORDS = {
    "clock": frozenset(("time", "hour", "hours", "open", "opening")),
    "money": frozenset(("cost", "price", "fee", "charge", "rate", "pay", "expensive", "extra")),
    "duration": frozenset(("long", "soon", "quickly", "fast")),
    "address": frozenset(("address", "located", "location")),
    "phone": frozenset(("phone", "telephone", "number", "call")),
    "email": frozenset(("email", "mail")),
    "count": frozenset(("many", "number")),
    "when": frozenset(("day", "date")),
}
#: Added to the rank (not the score) of a sentence that gives the kind of answer the question asks for.
TYPE_BONUS = 0.15


def asks_for(question: str) -> set[str]:
    """The kinds of answer ``question`` asks for: duration, money, clock, address, phone, email, count."""
    lowered = " ".join(question.lower().replace("\u2019", "'").split())
    kinds = {kind for kind, pattern in _ASKS.items() if pattern.search(lowered)}
    if "duration" in kinds:
        kinds.discard("count")  # "how many days" asks for a duration, which has its number
    if "when" in kinds:
        kinds -= _NOT_WHEN
    return kinds


def gives(sentence: str, kinds: set[str]) -> bool:
    """``sentence`` holds an answer of one of ``kinds``."""
    return any(_GIVES[kind].search(sentence) for kind in kinds)


#: Share of a table row's coverage lost when none of its key's words are in the question.
ROW_KEY_PENALTY = 0.5


def _row_key(text: str) -> list[str]:
    """Content words of the first cell's value of a table row chunk (``Plan: Core Annual | ...``)."""
    if " | " not in text:
        return []
    first = text.split(" | ", 1)[0]
    _, sep, value = first.partition(": ")
    return sorted(words.vocabulary(value)) if sep else []


#: A "which ..." question over a table lists the rows scoring at least this share of the best row's
#: key-term coverage, at most this many.
ROW_LIST_SHARE = 0.9
ROW_LIST_MAX = 5
_WHICH = re.compile(
    r"^\s*(?:and |so )?(?:which|what)\s+(?:\w+\s+)?(?:plans?|rooms?|products?|models?|options?|types?|kinds?|"
    r"ones|items?|services?|tiers?|packages?|treatments?|classes|stores?|clubs?|locations?)\b",
    re.I,
)


def list_rows(question: str, scored: Sequence[Scored], best: Scored) -> Selection | None:
    """For "Which plans give access to all clubs?": the rows of the best row's table that match the
    question about as well as it and hold the same value in the column it asks about ("Plan: All Clubs,
    Premium (Club access: All 4 clubs)."), when there are two or more; else None (one row answers)."""
    key = _row_cells(best.candidate.text)
    if len(key) < 2 or not _WHICH.search(question) or best.coverage <= 0:
        return None
    terms = key_terms(question)

    def asked(cell: tuple[str, str]) -> int:
        return sum(words.covered(t, words.vocabulary(f"{cell[0]} {cell[1]}")) for t in terms)

    column, value = max(key[1:], key=asked)
    if not asked((column, value)):
        return None
    rows = []
    for s in sorted(scored, key=lambda s: -s.rank):
        cells = _row_cells(s.candidate.text)
        if (
            cells
            and cells[0][0] == key[0][0]
            and s.candidate.chunk.source == best.candidate.chunk.source
            and dict(cells).get(column) == value
            and s.coverage >= ROW_LIST_SHARE * best.coverage  # a row's key is not asked for: no penalty
        ):
            rows.append((cells[0][1], s.candidate.chunk))
    names = list(dict.fromkeys(name for name, _ in rows))[:ROW_LIST_MAX]
    if len(names) < 2:
        return None
    chunks = list({c.chunk_id: c for name, c in rows if name in names}.values())
    text = f"{key[0][0]}: {', '.join(names)} ({column}: {value})."
    return Selection(text=text, chunk=chunks[0], score=best.score, also=tuple(chunks[1:]))


def _row_cells(text: str) -> list[tuple[str, str]]:
    """The ``(column, value)`` cells of a table row chunk (``Plan: Core | Monthly price: $55``)."""
    if " | " not in text:
        return []
    cells = []
    for part in text.rstrip(".").split(" | "):
        name, sep, value = part.partition(": ")
        if not sep:
            return []
        cells.append((name.strip(), value.strip()))
    return cells


def select(scored: Sequence[Scored], question: str = "") -> Selection | None:
    """The best sentence and the neighbours that complete it, within :data:`MAX_CHARS`; for a "which
    ..." question over a table, the rows that match (:func:`list_rows`)."""
    if not scored:
        return None
    best = max(scored, key=lambda s: s.rank)
    listed = list_rows(question, scored, best) if question else None
    if listed is not None:
        return listed
    same = sorted(
        (s for s in scored if s.candidate.chunk.chunk_id == best.candidate.chunk.chunk_id),
        key=lambda s: s.candidate.position,
    )
    chosen = [best]
    index = same.index(best)
    following = same[index + 1 :]
    # A lead-in ("Delivery times:") or a very short sentence needs the one after it.
    if following and (best.candidate.text.endswith(":") or len(best.candidate.text) < 40):
        chosen.append(following.pop(0))
    for neighbour in following[:1] + same[max(0, index - 1) : index]:
        if len(chosen) >= MAX_SENTENCES:
            break
        if neighbour.rank >= best.rank - NEIGHBOUR_MARGIN and neighbour not in chosen:
            chosen.append(neighbour)
    chosen.sort(key=lambda s: s.candidate.position)
    while len(chosen) > 1 and sum(len(s.candidate.text) + 1 for s in chosen) > MAX_CHARS:
        chosen.remove(min((s for s in chosen if s is not best), key=lambda s: s.rank))
    text = " ".join(_sentence(s.candidate.text) for s in chosen)
    return Selection(text=text, chunk=best.candidate.chunk, score=best.score)


def _sentence(text: str) -> str:
    """A table row or list item read as a sentence (ends with punctuation)."""
    return text if text.endswith((".", "!", "?", ":")) else f"{text}."


def assess(
    question: str,
    scored: Sequence[Scored],
    chunks: Sequence[RetrievedChunk],
    *,
    min_score: float,
    max_uncovered_share: float,
    sure_semantic: float,
    names_decline: bool = True,
) -> Answerability:
    """Decide whether ``chunks`` answer ``question``.

    Declined when a name in the question (a place, a product) is in no passage; when no sentence scores
    ``min_score``; or when key terms holding more than ``max_uncovered_share`` of the question's weight are
    in no passage and no sentence is semantically closer than ``sure_semantic`` (a paraphrase in other
    words passes on meaning, a near miss with the brand's vocabulary does not).
    """
    if not scored:
        return Answerability(False, "no sentence in the retrieved passages")
    vocabulary: set[str] = set()
    for chunk in chunks:
        vocabulary |= words.meaning_vocabulary(f"{chunk.heading_path} {chunk.text}")
    terms = key_terms(question)
    by_phrase = words.phrase_covered(words.phrase_keys(question), vocabulary)
    for kind in set().union(*(s.gives for s in scored)):
        by_phrase |= TYPE_WORDS[kind]
    uncovered = tuple(
        sorted(t for t in terms if words.stem(t) not in by_phrase and not words.covered(t, vocabulary))
    )
    best = max(s.rank for s in scored)
    semantic = max(s.semantic for s in scored)
    share = len(uncovered) / len(terms) if terms else 0.0
    names = tuple(sorted(n for n in words.names(question) if n in uncovered))

    def verdict(answerable: bool, reason: str) -> Answerability:
        return Answerability(answerable, reason, uncovered, best, semantic, share, names)

    if names and names_decline:
        return verdict(False, f"not in the knowledge: {', '.join(names)}")
    if best < min_score:
        missing = f"; not in the knowledge: {', '.join(uncovered)}" if uncovered else ""
        return verdict(False, f"no passage answers it (best {best:.2f}){missing}")
    if uncovered and share > max_uncovered_share and semantic < sure_semantic:
        missing = ", ".join(uncovered)
        return verdict(False, f"key terms not in the knowledge: {missing} (closest {semantic:.2f})")
    return verdict(True, "covered")
