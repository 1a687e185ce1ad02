"""Word-level text helpers shared by the groundedness guard and answer selection.

Deliberately small and deterministic: content words (stopwords removed, light plural folding), numbers
with their units and currencies, sentence splitting of answers and passages, negation scopes, and the
capitalised names an answer may only repeat, never invent. Both sides of every comparison (answer and
passage, question and passage) go through the same functions, so they agree on what a "word" is.
"""

from __future__ import annotations

import re
from difflib import get_close_matches

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
    return word


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
    found = {stem(w) for w in content_words(text)}
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


def covered(term: str, known: set[str], *, cutoff: float = 0.8) -> bool:
    """``term`` (by its stem) is in ``known`` (a :func:`vocabulary`), or within a typo of a word there
    (words of 5+ letters)."""
    term = stem(term)
    if term in known:
        return True
    if len(term) < 5:
        return False
    return bool(get_close_matches(term, [w for w in known if abs(len(w) - len(term)) <= 2], 1, cutoff))
