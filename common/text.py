"""Word-level text helpers shared by the groundedness guard and answer selection.

Deliberately small and deterministic: content words (stopwords removed, light plural folding), numbers
with their units and currencies, sentence splitting of answers and passages, negation scopes, and the
capitalised names an answer may only repeat, never invent. Both sides of every comparison (answer and
passage, question and passage) go through the same functions, so they agree on what a "word" is.
"""

from __future__ import annotations

import functools
import re
from difflib import get_close_matches
from pathlib import Path
from typing import NamedTuple

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W\d_]+)?", re.UNICODE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")

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
#: Function words: they carry no claim of their own (negations are handled by :func:`negated_words`).
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

#: Words that turn what follows them (up to the end of the clause) into its opposite.
_NEGATOR_TEXT = """
    no not never none nothing nobody nowhere neither nor without cannot can't don't doesn't didn't
    isn't aren't wasn't weren't won't wouldn't shouldn't couldn't haven't hasn't hadn't mustn't
    unable unavailable excluded except
"""
NEGATORS = frozenset(_NEGATOR_TEXT.split())
#: Where a negation's scope ends: a contrast, or a new clause with its own subject after a comma.
_SCOPE_END_WORDS = frozenset(
    ("but", "however", "although", "though", "whereas", "while", "instead", "unless")
)
_CLAUSE_SUBJECTS = frozenset(
    ("we", "you", "they", "it", "he", "she", "i", "this", "that", "there", "and", "so")
)
_CURLY = "\u2019"  # typographic apostrophe, read as "'"
_UNIT_TEXT = """
    second seconds minute minutes min mins hour hours hr hrs day days week weeks month months year years
    business working calendar am pm percent kg g lb lbs oz km m cm mm mi mile miles ft inch inches
    item items order orders time times night nights person people guest guests visit visits class classes
    session sessions pass passes
"""
#: Units a number may be stated in; "30 days" is not backed by "30 hours".
UNITS = frozenset(_UNIT_TEXT.split())
_CURRENCY = re.compile(
    r"([$€£¥])\s?(\d+(?:[.,]\d+)*)|(\d+(?:[.,]\d+)*)\s?(usd|eur|gbp|dollars?|euros?)\b", re.I
)


def fold(word: str) -> str:
    """Light plural folding (``returns`` → ``return``, ``policies`` → ``policy``)."""
    word = word.removesuffix("'s")
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


_SUFFIXES = ("ability", "ibility", "able", "ible", "ing", "ed", "ment", "ly")


def stem(word: str) -> str:
    """:func:`fold` plus common suffixes cut, for comparing claims: refund, refunded, refundable → refund."""
    word = fold(word)
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    # "reimburse" and "reimbursed" (cut to "reimburs") must meet: a final silent e goes too.
    return word[:-1] if len(word) > 4 and word.endswith("e") and not word.endswith("ee") else word


def words(text: str) -> list[str]:
    """Lower-cased words, in order (apostrophes kept: ``don't``)."""
    return [w.lower().replace(_CURLY, "'") for w in _WORD.findall(text.replace(_CURLY, "'"))]


def content_words(text: str) -> set[str]:
    """Lower-cased words minus stopwords, plurals folded (``returns`` → ``return``)."""
    return {fold(w) for w in words(text) if w not in STOPWORDS and len(w) >= 2}


def content_sequence(text: str) -> list[str]:
    """Content words in order (for word-pair checks)."""
    return [fold(w) for w in words(text) if w not in STOPWORDS and len(w) >= 2]


def tokens(text: str) -> list[str]:
    """Lower-cased word and number tokens, in order."""
    return [t.lower() for t in _TOKEN.findall(text.replace(_CURLY, "'"))]


def numbers(text: str) -> set[str]:
    """Numbers with thousands separators and trailing punctuation normalised (``1,000`` → ``1000``)."""
    return {_normal_number(raw) for raw in _NUMBER.findall(text)}


def _normal_number(raw: str) -> str:
    value = raw.replace(",", "") if re.fullmatch(r"\d{1,3}(?:,\d{3})+", raw) else raw
    value = value.rstrip(".,")
    return re.sub(r"\.0+$", "", value)


def quantities(text: str) -> set[tuple[str, str]]:
    """``(number, unit)`` pairs: the unit word right after a number, or the currency around it."""
    found: set[tuple[str, str]] = set()
    for match in _CURRENCY.finditer(text):
        symbol, value = (
            (match.group(1), match.group(2)) if match.group(1) else (match.group(4), match.group(3))
        )
        found.add((_normal_number(value), _currency_name(symbol)))
    toks = tokens(text)
    for i, tok in enumerate(toks[:-1]):
        if tok.isdigit() and toks[i + 1] in UNITS:
            found.add((tok, fold(toks[i + 1])))
    return found


def _currency_name(symbol: str) -> str:
    symbol = symbol.lower()
    return {"$": "usd", "dollar": "usd", "dollars": "usd", "€": "eur", "euro": "eur", "euros": "eur"}.get(
        symbol, {"£": "gbp", "¥": "jpy"}.get(symbol, symbol)
    )


def sentences(text: str) -> list[str]:
    """Sentences and lines of ``text`` (list markers removed), stripped, empty ones dropped."""
    out = []
    for piece in _SENTENCE_END.split(text):
        piece = _LIST_MARKER.sub("", piece or "").strip()
        if piece:
            out.append(piece)
    return out


_BLOCK_START = re.compile(r"^\s*(?:[-*+•]\s|\d+[.)]\s|\||#|Q:|A:)")
_PASSAGE_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def passage_sentences(text: str) -> list[str]:
    """Sentences of a passage whose lines are wrapped (Markdown source): a line continues the previous
    one unless a blank line, a list item, a table row, a heading or a FAQ ``Q:``/``A:`` starts it."""
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip():
            blocks.append([])
            continue
        if not blocks or not blocks[-1] or _BLOCK_START.match(line):
            blocks.append([])
        blocks[-1].append(line.strip())
    out = []
    for block in blocks:
        joined = " ".join(block)
        for piece in _PASSAGE_SENTENCE_END.split(joined):
            piece = _LIST_MARKER.sub("", piece).strip()
            if piece:
                out.append(piece)
    return out


def vocabulary(text: str) -> set[str]:
    """Stems of the content words of ``text``, hyphenated words also joined ("cut-off" → "cutoff")."""
    found = {stem(w) for w in content_words(text)} | numbers(text)
    found |= {stem(w.replace("-", "").lower()) for w in re.findall(r"\w+(?:-\w+)+", text)}
    return found


def negated_words(text: str) -> set[str]:
    """Content words of ``text`` that stand inside a negation's scope (folded).

    A scope opens at a negator and runs to the end of the clause: sentence punctuation, a contrast word
    ("but", "however", ...), or a comma followed by a new subject (", we ..."). A list after a negation
    stays inside it: in "We do not accept cash, checks or cryptocurrency" all three are negated.
    """
    scoped: set[str] = set()
    pieces = re.findall(r"[^\W_]+(?:['\u2019][^\W\d_]+)?|[,;:.!?()]", text.lower().replace(_CURLY, "'"))
    negating = False
    for i, piece in enumerate(pieces):
        if piece in {";", ":", ".", "!", "?", "(", ")"}:
            negating = False
            continue
        if piece == ",":
            following = pieces[i + 1] if i + 1 < len(pieces) else ""
            if following in _CLAUSE_SUBJECTS:
                negating = False
            continue
        if piece in _SCOPE_END_WORDS:
            negating = False
            continue
        if piece in NEGATORS or piece.endswith("n't"):
            negating = True
            continue
        if negating and piece not in STOPWORDS and len(piece) >= 2 and not piece.isdigit():
            scoped.add(fold(piece))
    return scoped


def names(text: str) -> set[str]:
    """Capitalised words that are not the first word of a sentence: places, products, people (folded).

    ``I`` and all-caps acronyms of one letter are skipped. Used to keep an answer from naming a store,
    a product or a plan that its passage does not name.
    """
    found: set[str] = set()
    for sentence in sentences(text):
        raw = _WORD.findall(sentence)
        for word in raw[1:]:
            if len(word) >= 2 and word[0].isupper() and word.lower() not in STOPWORDS:
                found.add(fold(word.lower()))
    return found


#: How close a misspelt word must be to a known one (difflib ratio): "shiping"/"shipping" is 0.93,
#: "standrad"/"standard" 0.88, "retired"/"required" 0.80 (a real word, not a typo of the other).
TYPO_CUTOFF = 0.85


def close_word(word: str, known: set[str] | frozenset[str]) -> str | None:
    """The word of ``known`` that ``word`` (4+ letters) is a typo of: one edit or a swap away."""
    if len(word) < 4:
        return None
    near = [w for w in known if abs(len(w) - len(word)) <= 2]
    for candidate in near:  # a transposition keeps the letters ("lnog" for "long")
        if len(candidate) == len(word) and sorted(candidate) == sorted(word) and candidate != word:
            differing = sum(a != b for a, b in zip(candidate, word, strict=True))
            if differing == 2:
                return candidate
    if len(word) < 5:
        # "sell" is one letter from "shell": a short word is only trusted as a swap, or as a known word
        # with one letter dropped after its first two ("stor" for "store", "gues" for "guest").
        for candidate in near:
            longer = len(candidate) == len(word) + 1 and candidate[:2] == word[:2]
            if longer and any(candidate[:i] + candidate[i + 1 :] == word for i in range(2, len(candidate))):
                return candidate
        return None
    match = get_close_matches(word, near, 1, TYPO_CUTOFF)
    return match[0] if match else None


def covered(term: str, known: set[str]) -> bool:
    """``term`` (by its stem) is in ``known`` (a :func:`vocabulary`, with :func:`phrase_keys` for the
    lexicon's phrases), a typo of a word there, or a customer-service synonym of one (:func:`synonyms`)."""
    term = stem(term)
    if term in known or close_word(term, known) is not None:
        return True
    return not synonyms(term).isdisjoint(known)


#: The lexicon of customer-service synonyms (one group per line; see the file's header).
SYNONYMS_FILE = Path(__file__).with_name("synonyms.txt")
_PHRASE_PREFIX = "~"


def _member_key(member: str) -> str:
    """A lexicon member as :func:`vocabulary` or :func:`phrase_keys` would hold it."""
    member = " ".join(member.lower().replace(_CURLY, "'").split())
    if re.fullmatch(r"[^\W_]+(?:-[^\W_]+)*", member):
        return stem(member.replace("-", ""))
    return _PHRASE_PREFIX + member


class _Lexicon(NamedTuple):
    groups: dict[str, frozenset[str]]  # each member's synonyms, as keys
    phrases: tuple[str, ...]  # every phrase member
    written: dict[str, str]  # each key's words as written in the file


@functools.cache
def _lexicon() -> _Lexicon:
    """The lexicon of :data:`SYNONYMS_FILE`, read once."""
    groups: dict[str, set[str]] = {}
    phrases: set[str] = set()
    written: dict[str, str] = {}
    for line in SYNONYMS_FILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            continue
        members = {_member_key(m): " ".join(m.lower().split()) for m in line.split(",") if m.strip()}
        written.update(members)
        keys = set(members)
        phrases |= {k.removeprefix(_PHRASE_PREFIX) for k in keys if k.startswith(_PHRASE_PREFIX)}
        for key in keys:
            groups.setdefault(key, set()).update(keys - {key})
    return _Lexicon({k: frozenset(v) for k, v in groups.items()}, tuple(sorted(phrases)), written)


#: At most this many synonyms are added to a search query (more would drown the question's own words).
MAX_EXPANSIONS = 6


def expand_query(text: str, known: set[str] | frozenset[str]) -> str:
    """``text`` with the brand's words for the words it does not use itself ("do you take bitcoin" →
    "... cryptocurrency" for a brand whose documents say "cryptocurrency"); ``known`` is the brand's
    :func:`known_words`. Only what retrieval searches for is expanded, never what is answered."""
    groups, written = _lexicon().groups, _lexicon().written
    added: list[str] = []
    for word in words(text):
        if word in STOPWORDS or word in known or fold(word) in known:
            continue
        for key in sorted(groups.get(stem(word), ())):
            surface = written[key]
            if surface not in added and all(w in known or fold(w) in known for w in words(surface)):
                added.append(surface)
    return f"{text} {' '.join(added[:MAX_EXPANSIONS])}" if added else text


def synonyms(term: str) -> frozenset[str]:
    """The lexicon's synonyms of ``term`` (by stem), as keys of :func:`vocabulary` and :func:`phrase_keys`."""
    return _lexicon().groups.get(stem(term.lower()), frozenset())


def meaning_vocabulary(text: str) -> set[str]:
    """:func:`vocabulary` with the lexicon's phrases ``text`` holds (:func:`phrase_keys`): what
    :func:`covered` reads a passage as."""
    return vocabulary(text) | phrase_keys(text)


def phrase_covered(keys: set[str], known: set[str]) -> set[str]:
    """Stems of the words of the lexicon phrases ``keys`` (a question's :func:`phrase_keys`) whose
    meaning ``known`` holds: "lost property" is covered by a passage that says "items found", so
    "property" is too."""
    found: set[str] = set()
    for key in keys:
        if key in known or not _lexicon().groups.get(key, frozenset()).isdisjoint(known):
            found |= {stem(w) for w in content_words(key.removeprefix(_PHRASE_PREFIX))}
    return found


def phrase_keys(text: str) -> set[str]:
    """Keys of the lexicon's phrases that ``text`` contains ("10% off" holds "% off")."""
    lowered = " ".join(text.lower().replace(_CURLY, "'").split())
    found = set()
    for phrase in _lexicon().phrases:
        at = lowered.find(phrase)
        while at >= 0:
            before = lowered[at - 1] if at else " "
            after = lowered[at + len(phrase)] if at + len(phrase) < len(lowered) else " "
            edge_ok = not (phrase[0].isalnum() and before.isalnum()) and not (
                phrase[-1].isalnum() and after.isalnum()
            )
            if edge_ok:
                found.add(_PHRASE_PREFIX + phrase)
                break
            at = lowered.find(phrase, at + 1)
    return found


def correct_spelling(text: str, known: set[str] | frozenset[str]) -> str:
    """``text`` with each word that is not in ``known`` (lower-case words) but a typo of one replaced.

    Stopwords and words of under four letters are left alone; so is every word when nothing is close.
    """

    def fix(match: re.Match[str]) -> str:
        word = match.group(0)
        lowered = word.lower()
        if lowered in known or lowered in STOPWORDS or fold(lowered) in known:
            return word
        better = close_word(lowered, known)
        return better if better is not None else word

    return _WORD.sub(fix, text)


def known_words(texts: list[str]) -> frozenset[str]:
    """Lower-case words of ``texts`` (a brand's chunks) and their singulars, for :func:`correct_spelling`
    ("take" is a word of a brand that writes "takes", not a typo of it)."""
    found: set[str] = set()
    for chunk in texts:
        found.update(words(chunk))
    return frozenset(found | {fold(w) for w in found})
