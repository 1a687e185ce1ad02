"""Markdown structure both the parser (FAQ tables) and the chunker (headings, code lines) must agree on."""

from __future__ import annotations

import re

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


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
