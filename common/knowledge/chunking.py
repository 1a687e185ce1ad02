"""Markdown-aware chunking of knowledge documents into pieces the embedding model can take whole.

A document is cut into *sections* at ATX headings (``#`` … ``######``) outside fenced code blocks; each
section keeps its heading path (``"Shipping > International"``) as metadata. A section that fits the
token budget is one chunk. A longer one is cut into *units* — sentences, and code lines inside fences —
that are packed greedily into chunks, each chunk starting with up to ``overlap_tokens`` of the previous
chunk's trailing units. A unit that alone exceeds the budget falls back to word windows, and a single
"word" that still does (a URL, CJK text without spaces) to character windows, so nothing is ever dropped
and every chunk fits.

Table rows (data tables the parser took out of the text) are one chunk each, ``Plan: Flex | Price: €39``
(every cell under its column name), under the heading path of the section that held the table, so a
question about one product finds that product's row rather than the whole table. FAQ entries
(question/answer pairs from :mod:`common.knowledge.parsing`) are one chunk each, ``Q: …\nA: …`` under the
heading path ``"FAQ > <question>"``. A row or an answer above the budget is split like any other section.
:func:`chunk_parsed` chunks a whole :class:`~common.knowledge.parsing.ParsedDocument` (text first, then
its table rows, then its FAQ).

Tokens are measured with a ``count_tokens`` callable (the embedding model's tokenizer in production),
assumed roughly additive: each unit is counted once, and every packed chunk is checked again as a whole.
Pure functions; nothing heavy is imported here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.knowledge.markdown import HEADING_SEPARATOR as HEADING_SEPARATOR  # callers' name for it
from common.knowledge.markdown import CodeFences, HeadingTrail, match_heading

if TYPE_CHECKING:
    from common.knowledge.parsing import ParsedDocument

#: First level of every FAQ entry's heading path.
FAQ_HEADING = "FAQ"

#: Content types :func:`chunk_document` understands.
MARKDOWN = "text/markdown"
PLAIN_TEXT = "text/plain"

# A sentence ends at . ! ? … (plus closing quotes/brackets) before whitespace, or right after a
# CJK / Arabic / Devanagari full stop, which need no following space.
_SENTENCE_END = re.compile(
    r"[.!?\u2026]+[\"'\u201d\u2019\u00bb)\]]*(?=\s)"  # . ! ? ellipsis, then closing quotes/brackets
    r"|[\u3002\uff01\uff1f\u061f\u06d4\u0964]+"  # CJK, Arabic/Urdu and Devanagari stops
)

CountTokens = Callable[[str], int]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a document: its heading path, its text and its position in the document."""

    heading_path: str
    text: str
    ordinal: int


@dataclass(frozen=True, slots=True)
class _Unit:
    """A piece of a section and the separator that preceded it in the source (``""`` for the first)."""

    sep: str
    text: str


def embedding_text(*, heading_path: str, text: str) -> str:
    """What gets embedded for a chunk: its heading path, then its text (headings carry topic words)."""
    return f"{heading_path}\n{text}" if heading_path else text


def chunk_document(
    text: str,
    *,
    content_type: str,
    count_tokens: CountTokens,
    chunk_tokens: int,
    overlap_tokens: int,
) -> list[Chunk]:
    """Chunk ``text`` as Markdown (``text/markdown``) or as one untitled section (``text/plain``)."""
    if content_type == PLAIN_TEXT:
        sections = [("", text)]
    elif content_type == MARKDOWN:
        sections = list(_markdown_sections(text))
    else:
        raise ValueError(f"cannot chunk content type {content_type!r}")
    chunks: list[Chunk] = []
    for heading_path, body in sections:
        for piece in _chunk_section(
            heading_path=heading_path,
            body=body,
            count_tokens=count_tokens,
            chunk_tokens=chunk_tokens,
            overlap_tokens=overlap_tokens,
        ):
            chunks.append(Chunk(heading_path=heading_path, text=piece, ordinal=len(chunks)))
    return chunks


def chunk_faq(
    entries: Iterable[tuple[str, str]],
    *,
    count_tokens: CountTokens,
    chunk_tokens: int,
    overlap_tokens: int,
    first_ordinal: int = 0,
) -> list[Chunk]:
    """One chunk per ``(question, answer)``: ``Q: …\nA: …`` under ``"FAQ > <question>"``."""
    chunks: list[Chunk] = []
    for question, answer in entries:
        question = " ".join(question.split())
        heading_path = f"{FAQ_HEADING}{HEADING_SEPARATOR}{question}"
        for piece in _chunk_section(
            heading_path=heading_path,
            body=f"Q: {question}\nA: {answer.strip()}",
            count_tokens=count_tokens,
            chunk_tokens=chunk_tokens,
            overlap_tokens=overlap_tokens,
        ):
            chunks.append(Chunk(heading_path=heading_path, text=piece, ordinal=first_ordinal + len(chunks)))
    return chunks


def table_row_text(cells: Iterable[tuple[str, str]]) -> str:
    """A table row as one line, ``Name: value | …``: each value keeps its column name, which is what
    makes a lone row answerable (``€39`` alone says nothing)."""
    return " | ".join(f"{name}: {value}" for name, value in cells)


def chunk_table_rows(
    rows: Iterable[tuple[str, Sequence[tuple[str, str]]]],
    *,
    count_tokens: CountTokens,
    chunk_tokens: int,
    overlap_tokens: int,
    first_ordinal: int = 0,
) -> list[Chunk]:
    """One chunk per ``(heading_path, cells)`` row: :func:`table_row_text` under the table's heading path."""
    chunks: list[Chunk] = []
    for heading_path, cells in rows:
        for piece in _chunk_section(
            heading_path=heading_path,
            body=table_row_text(cells),
            count_tokens=count_tokens,
            chunk_tokens=chunk_tokens,
            overlap_tokens=overlap_tokens,
        ):
            chunks.append(Chunk(heading_path=heading_path, text=piece, ordinal=first_ordinal + len(chunks)))
    return chunks


def chunk_parsed(
    document: ParsedDocument, *, count_tokens: CountTokens, chunk_tokens: int, overlap_tokens: int
) -> list[Chunk]:
    """Chunk a parsed document: its text as ``text_type``, then one chunk per table row and FAQ entry.

    Rows and entries come after the text, so a document without them keeps the ordinals it had.
    """
    chunks = chunk_document(
        document.text,
        content_type=document.text_type,
        count_tokens=count_tokens,
        chunk_tokens=chunk_tokens,
        overlap_tokens=overlap_tokens,
    )
    chunks += chunk_table_rows(
        document.table_rows,
        count_tokens=count_tokens,
        chunk_tokens=chunk_tokens,
        overlap_tokens=overlap_tokens,
        first_ordinal=len(chunks),
    )
    return chunks + chunk_faq(
        document.sections,
        count_tokens=count_tokens,
        chunk_tokens=chunk_tokens,
        overlap_tokens=overlap_tokens,
        first_ordinal=len(chunks),
    )


def chunk_markdown(
    text: str, *, count_tokens: CountTokens, chunk_tokens: int, overlap_tokens: int
) -> list[Chunk]:
    """Chunk a Markdown document; see the module docstring."""
    return chunk_document(
        text,
        content_type=MARKDOWN,
        count_tokens=count_tokens,
        chunk_tokens=chunk_tokens,
        overlap_tokens=overlap_tokens,
    )


def _markdown_sections(text: str) -> Iterator[tuple[str, str]]:
    """Yield ``(heading_path, body)`` per heading; text before the first heading has an empty path."""
    trail = HeadingTrail()
    body: list[str] = []
    fences = CodeFences()
    for line in text.splitlines():
        heading = None if fences.is_code(line) else match_heading(line)
        if heading is None:
            body.append(line)
            continue
        yield trail.path, "\n".join(body)
        trail.enter(*heading)
        body = []
    yield trail.path, "\n".join(body)


def _chunk_section(
    *, heading_path: str, body: str, count_tokens: CountTokens, chunk_tokens: int, overlap_tokens: int
) -> list[str]:
    body = body.strip()
    if not body:
        return []
    # The heading path is embedded with the text (see embedding_text), so it spends part of the budget;
    # never more than half, or a deep path would leave room for nothing.
    budget = max(chunk_tokens - count_tokens(heading_path + "\n") if heading_path else chunk_tokens, 1)
    budget = max(budget, chunk_tokens // 2)
    if count_tokens(body) <= budget:
        return [body]
    units = [u for unit in _section_units(body) for u in _fit(unit, budget, count_tokens)]
    overlap = min(overlap_tokens, budget // 2)
    return _pack(units, budget=budget, overlap=overlap, count_tokens=count_tokens)


def _section_units(body: str) -> Iterator[_Unit]:
    """Split a section into sentences (prose) and lines (code), remembering each original separator."""
    sep = ""
    fences = CodeFences()
    pending_blank = False
    for line in body.splitlines():
        if fences.is_code(line):
            yield _Unit(sep=("\n\n" if pending_blank else "\n") if sep else "", text=line)
            sep, pending_blank = "\n", False
            continue
        if not line.strip():
            pending_blank = True
            continue
        line_sep = ("\n\n" if pending_blank else "\n") if sep else ""
        for i, sentence in enumerate(_sentences(line)):
            yield _Unit(sep=line_sep if i == 0 else " ", text=sentence)
        sep, pending_blank = "\n", False


def _sentences(line: str) -> list[str]:
    out: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(line):
        piece = line[start : match.end()].strip()
        if piece:
            out.append(piece)
        start = match.end()
    tail = line[start:].strip()
    if tail:
        out.append(tail)
    return out


def _fit(unit: _Unit, budget: int, count_tokens: CountTokens) -> list[_Unit]:
    """Return ``unit`` as is if it fits, else word windows, else character windows."""
    if count_tokens(unit.text) <= budget:
        return [unit]
    words = unit.text.split()
    if len(words) > 1:
        pieces = [_Unit(sep=unit.sep if i == 0 else " ", text=w) for i, w in enumerate(words)]
        return [p for piece in pieces for p in _fit(piece, budget, count_tokens)]
    return [
        _Unit(sep=unit.sep if i == 0 else "", text=window)
        for i, window in enumerate(_char_windows(unit.text, budget, count_tokens))
    ]


def _char_windows(text: str, budget: int, count_tokens: CountTokens) -> list[str]:
    """Cut a space-free string into the longest prefixes that fit (binary search per window)."""
    windows: list[str] = []
    while text:
        lo, hi = 1, len(text)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count_tokens(text[:mid]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        windows.append(text[:lo])
        text = text[lo:]
    return windows


def _join(units: list[_Unit]) -> str:
    return "".join((u.sep if i else "") + u.text for i, u in enumerate(units)).strip()


def _pack(units: list[_Unit], *, budget: int, overlap: int, count_tokens: CountTokens) -> list[str]:
    """Greedy packing; each chunk after the first starts with the previous chunk's trailing units."""
    sizes = [count_tokens(u.text) for u in units]
    seps = {sep: count_tokens(sep) for sep in {u.sep for u in units}}
    chunks: list[str] = []
    start = 0
    while start < len(units):
        end, used = start, 0
        while end < len(units):
            cost = sizes[end] + (seps[units[end].sep] if end > start else 0)
            if end > start and used + cost > budget:
                break
            used, end = used + cost, end + 1
        # The estimate assumes additivity; the whole chunk is the judge.
        while end - start > 1 and count_tokens(_join(units[start:end])) > budget:
            end -= 1
        chunks.append(_join(units[start:end]))
        if end >= len(units):
            break
        start = _overlap_start(
            start=start, end=end, sizes=sizes, overlap=overlap, next_size=sizes[end], budget=budget
        )
    return chunks


def _overlap_start(
    *, start: int, end: int, sizes: list[int], overlap: int, next_size: int, budget: int
) -> int:
    """First unit of the next chunk: as many trailing units of this one as the overlap allows."""
    new_start, carried = end, 0
    while new_start - 1 > start and carried + sizes[new_start - 1] <= min(overlap, budget - next_size):
        new_start -= 1
        carried += sizes[new_start]
    return new_start
