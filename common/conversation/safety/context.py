"""Indirect injection: retrieved documents are data, so instruction-like text in them is defanged.

:func:`neutralize_context` returns the document with, in this order:

1. NFKC normalisation and invisible characters removed (zero-width, bidi controls, Unicode tag
   characters), so hidden text cannot ride along into the prompt;
2. prompt markup replaced by ``[markup removed]``: the ``<context>`` tags the prompt uses to fence data,
   chat-template tokens (``<|im_start|>``, ``<|system|>``, ``[INST]``, ``<<SYS>>``) and
   ``<system>``/``<instructions>`` tags;
3. each sentence that :func:`common.conversation.safety.injection.detect_injection` flags replaced by
   ``[instruction removed]``; a line flagged as a whole although none of its sentences is alone
   (an injection spread over sentences) is replaced entirely.

Everything else is kept verbatim, line structure included, so ordinary how-to text ("ignore the first
step if your tent has no fly") survives. :func:`context_has_instructions` says whether step 2 or 3
would change anything, for logging and for flagging a source to its owner.
"""

from __future__ import annotations

import re
import unicodedata

from common.conversation.safety.injection import detect_injection

INSTRUCTION_REMOVED = "[instruction removed]"
MARKUP_REMOVED = "[markup removed]"

_HIDDEN = re.compile(
    "[\u00ad\u034f\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufe00-\ufe0f\ufeff\U000e0000-\U000e007f]"
)
_MARKUP = re.compile(
    r"<\s*/?\s*(?:context|system|instructions?)\s*>|<\|[^|>\n]{1,40}\|>|\[/?(?:INST|SYS|SYSTEM)\]|<</?SYS>>",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def neutralize_context(text: str) -> str:
    """The document with hidden characters and prompt markup removed and injected instructions replaced."""
    clean = _MARKUP.sub(MARKUP_REMOVED, _HIDDEN.sub("", unicodedata.normalize("NFKC", text)))
    return "\n".join(_neutralize_line(line) for line in clean.split("\n"))


def context_has_instructions(text: str) -> bool:
    """Whether the document carries prompt markup or instruction-like text aimed at the assistant."""
    clean = _HIDDEN.sub("", unicodedata.normalize("NFKC", text))
    if _MARKUP.search(clean):
        return True
    return any(detect_injection(line).is_injection for line in clean.split("\n") if line.strip())


def _neutralize_line(line: str) -> str:
    if not line.strip() or not detect_injection(line).is_injection:
        return line
    sentences = _SENTENCE.split(line)
    kept = [INSTRUCTION_REMOVED if detect_injection(s).is_injection else s for s in sentences]
    if INSTRUCTION_REMOVED not in kept:
        indent = line[: len(line) - len(line.lstrip())]
        return indent + INSTRUCTION_REMOVED
    return " ".join(kept)
