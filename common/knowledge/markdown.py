"""Markdown structure both the parser (tables) and the chunker (headings, code lines) must agree on."""

from __future__ import annotations

import re

#: Separator between the levels of a heading path.
HEADING_SEPARATOR = " > "

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")


class CodeFences:
    """Line-by-line tracker of fenced code blocks (CommonMark): a fence of three or more backticks or
    tildes opens a block, and only a fence of the same character at least as long closes it.

    Inside a block nothing is structure: a ``#`` line is not a heading, a ``|`` line not a table.
    """

    def __init__(self) -> None:
        self._open: str | None = None

    def is_code(self, line: str) -> bool:
        """Advance past ``line``; True if it is a fence or inside a fenced block."""
        match = _FENCE.match(line)
        if match is None:
            return self._open is not None
        marker = match.group(1)
        if self._open is None:
            self._open = marker
        elif marker[0] == self._open[0] and len(marker) >= len(self._open):
            self._open = None
        return True


def match_heading(line: str) -> tuple[int, str] | None:
    """``(level, title)`` when ``line`` is an ATX heading; the caller rules out code lines first."""
    match = _HEADING.match(line)
    return (len(match.group(1)), match.group(2).strip()) if match else None


class HeadingTrail:
    """The heading path at the current line, so a table's rows and its section's prose cite the same
    ``"Shipping > International"``: a heading closes every open heading at its level or deeper."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []

    @property
    def path(self) -> str:
        """The open headings, outermost first; untitled headings are left out."""
        return HEADING_SEPARATOR.join(title for _, title in self._stack if title)

    def enter(self, level: int, title: str) -> None:
        """Open a heading of ``level``."""
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
