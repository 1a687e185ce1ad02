"""Split a long reply into parts a channel accepts, at sentence or word boundaries, in reading order."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def split_text(text: str, *, limit: int) -> list[str]:
    """Parts of ``text`` no longer than ``limit`` characters; joined with spaces they read as the original.

    Cuts after a sentence end when one fits, else at the last whitespace, else (a single word longer than
    the limit, e.g. a URL) hard at the limit. Whitespace at the cut is dropped; nothing else is.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    rest = text.strip()
    parts: list[str] = []
    while len(rest) > limit:
        cut = _cut_point(rest, limit)
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


def _cut_point(text: str, limit: int) -> int:
    window = text[: limit + 1]  # a boundary right after the limit still lets the part end at the limit
    # A sentence end in the first half would leave a stub part: a word boundary near the limit reads better.
    sentence_ends = [m.start() for m in _SENTENCE_END.finditer(window) if limit // 2 <= m.start() <= limit]
    if sentence_ends:
        return sentence_ends[-1]
    space = window.rfind(" ", 1, limit + 1)
    for ws in ("\n", "\t"):
        space = max(space, window.rfind(ws, 1, limit + 1))
    if space > 0:
        return space
    return limit
