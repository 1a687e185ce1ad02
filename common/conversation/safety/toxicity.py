"""Abuse in customer messages and model answers, from self-hosted word lists.

The lists live in ``wordlists/toxicity_*.txt`` (English, Spanish, French, German), grouped in
sections ``[category weight]``; ``allow.txt`` lists ordinary words that contain a listed one
(Scunthorpe, cockpit, assess, class, shiitake, ...). Files are read and compiled once, at import.

Matching works on tokens of the folded text (NFKC, invisible characters removed, lower case, accents
stripped, apostrophes dropped), never on raw substrings, so "class" or "Scunthorpe" cannot match:

* a token is tried as written, with digits/symbols read as letters (``sh1t``, ``@ss``, ``$hit``) and
  with letters repeated three or more times shortened (``fuuuck``);
* ``*`` inside a token is a wildcard for one letter (``f*ck``, ``sh*t``, ``f**k``), provided the first
  letter is written and at most half the letters are hidden;
* a word also matches its inflections (``-s``, ``-es``, ``-ed``, ``-ing``, ``-in``, ``-er``, ``-ers``,
  ``-y``); ``word*`` entries match any token starting with the word and ``*word*`` entries any token
  containing it, both subject to the allow list;
* letters written one by one (``f u c k``) are joined first;
* phrases and ``re:`` patterns match the space-joined token sequence (threats, "you are useless").

The score is a noisy-or of the weights of the distinct terms found; ``is_toxic`` when it reaches
:data:`THRESHOLD`, so one profanity, insult or threat flags and a mild word ("damn", "sucks") alone
does not. ``categories`` says which kinds matched, so a caller can escalate threats and answer mere
profanity politely. Limits: a fixed vocabulary; sarcasm, new slang and abuse without listed words
pass, and slurs against protected groups are not shipped (add them in a list of your own).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from common.conversation.safety.decisions import ToxicityVerdict
from common.conversation.safety.normalize import deleet, despace, fold

THRESHOLD = 0.5
LIST_FILES = ("toxicity_en.txt", "toxicity_es.txt", "toxicity_fr_de.txt")
ALLOW_FILE = "allow.txt"
_SUFFIXES = ("ing", "ers", "in", "ed", "es", "er", "s", "y")
_SECTION = re.compile(r"^\[(?P<category>\w+)\s+(?P<weight>[0-9.]+)\]$")
_TOKEN = re.compile(r"[\w@$*]+(?:!+[\w@$*]+)*")
_APOSTROPHE = re.compile("['\u2019`]")
_REPEAT = re.compile(r"(\w)\1{2,}")


@dataclass(frozen=True)
class Term:
    """One list entry: what it matches, its category and weight."""

    text: str
    category: str
    weight: float


@dataclass
class Lexicon:
    """All list entries, indexed for token lookups."""

    words: dict[str, Term] = field(default_factory=dict)
    prefixes: list[Term] = field(default_factory=list)
    infixes: list[Term] = field(default_factory=list)
    phrases: list[tuple[re.Pattern[str], Term]] = field(default_factory=list)
    by_length: dict[int, list[Term]] = field(default_factory=dict)
    allowed: frozenset[str] = frozenset()
    allowed_phrases: re.Pattern[str] | None = None


def check_toxicity(text: str) -> ToxicityVerdict:
    """Score ``text`` against the word lists (see module docstring)."""
    lexicon = load_lexicon()
    found: dict[str, Term] = {}
    folded = fold(text)
    for variant in _variants(folded):
        sequence = " ".join(_TOKEN.findall(_APOSTROPHE.sub("", variant)))
        if lexicon.allowed_phrases is not None:
            sequence = lexicon.allowed_phrases.sub(" ", sequence)
        for token in sequence.split():
            term = _match_token(token, lexicon)
            if term is not None:
                found.setdefault(term.text, term)
        plain = deleet(sequence) or sequence
        for pattern, term in lexicon.phrases:
            match = pattern.search(plain) or pattern.search(sequence)
            if match is not None:
                found.setdefault(match.group(0), term)
    return _verdict(found)


@cache
def load_lexicon() -> Lexicon:
    """Parse the shipped word lists once (first call, normally at import)."""
    lexicon = Lexicon()
    package = resources.files("common.conversation.safety") / "wordlists"
    for name in LIST_FILES:
        _parse(package.joinpath(name).read_text(encoding="utf-8"), lexicon)
    allowed: list[str] = []
    phrases: list[str] = []
    for line in _lines(package.joinpath(ALLOW_FILE).read_text(encoding="utf-8")):
        (phrases if " " in line else allowed).append(fold(line))
    lexicon.allowed = frozenset(allowed)
    if phrases:
        lexicon.allowed_phrases = re.compile(r"\b(?:" + "|".join(map(re.escape, phrases)) + r")\b")
    return lexicon


def _parse(text: str, lexicon: Lexicon) -> None:
    category, weight = "profanity", 0.5
    for line in _lines(text):
        section = _SECTION.match(line)
        if section:
            category, weight = section["category"], float(section["weight"])
            continue
        if line.startswith("re:"):
            term = Term(line[3:], category, weight)
            lexicon.phrases.append((re.compile(line[3:]), term))
            continue
        entry = fold(line)
        term = Term(entry.strip("*"), category, weight)
        if " " in entry:
            lexicon.phrases.append((re.compile(r"\b" + re.escape(entry) + r"\b"), term))
        elif entry.startswith("*") and entry.endswith("*"):
            lexicon.infixes.append(term)
        elif entry.endswith("*"):
            lexicon.prefixes.append(term)
        else:
            lexicon.words[entry] = term
            lexicon.by_length.setdefault(len(entry), []).append(term)


def _lines(text: str) -> list[str]:
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


def _variants(folded: str) -> list[str]:
    joined = despace(folded)
    return [folded] if joined is None else [folded, joined]


def _match_token(token: str, lexicon: Lexicon) -> Term | None:
    if token in lexicon.allowed:
        return None
    for form in _forms(token):
        if form in lexicon.allowed:
            return None
        term = _lookup(form, lexicon)
        if term is not None:
            return term
    return None


def _forms(token: str) -> list[str]:
    """The token as written, de-leeted, and with long letter runs shortened."""
    forms = [token]
    leet = deleet(token)
    if leet is not None and leet != token:
        forms.append(leet)
    for form in list(forms):
        if _REPEAT.search(form):
            forms.extend((_REPEAT.sub(r"\1", form), _REPEAT.sub(r"\1\1", form)))
    return forms


def _lookup(form: str, lexicon: Lexicon) -> Term | None:
    if "*" in form:
        return _wildcard(form, lexicon)
    for stem in _stems(form):
        term = lexicon.words.get(stem)
        if term is not None:
            return term
    for term in lexicon.prefixes:
        if form.startswith(term.text):
            return term
    for term in lexicon.infixes:
        if term.text in form:
            return term
    return None


def _stems(form: str) -> list[str]:
    stems = [form]
    for suffix in _SUFFIXES:
        if form.endswith(suffix) and len(form) - len(suffix) >= 3:
            stem = form[: -len(suffix)]
            stems.append(stem)
            if len(stem) > 3 and stem[-1] == stem[-2]:
                stems.append(stem[:-1])
    return stems


def _wildcard(form: str, lexicon: Lexicon) -> Term | None:
    """``f*ck``: ``*`` stands for one hidden letter; the first letter must be shown."""
    hidden = form.count("*")
    if form[0] == "*" or hidden * 2 > len(form):
        return None
    partial = lexicon.infixes + lexicon.prefixes
    for stem in _stems(form):
        same_length: list[Term] = [
            *lexicon.by_length.get(len(stem), ()),
            *(t for t in partial if len(t.text) == len(stem)),
        ]
        for term in same_length:
            if all(a == "*" or a == b for a, b in zip(stem, term.text, strict=True)):
                return term
    for term in partial:
        if len(form) >= len(term.text) and all(
            a == "*" or a == b for a, b in zip(form, term.text, strict=False)
        ):
            return term
    return None


def _verdict(found: dict[str, Term]) -> ToxicityVerdict:
    miss = 1.0
    for term in found.values():
        miss *= 1.0 - term.weight
    score = round(1.0 - miss, 4)
    terms = tuple(sorted(found, key=lambda t: (-found[t].weight, t)))
    categories = tuple(dict.fromkeys(found[t].category for t in terms))
    return ToxicityVerdict(is_toxic=score >= THRESHOLD, score=score, terms=terms, categories=categories)


load_lexicon()
