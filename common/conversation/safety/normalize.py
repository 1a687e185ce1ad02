"""Text folding shared by the detectors: one canonical form so look-alike spellings meet the same rules.

``fold`` applies, in order: NFKC (full-width and mathematical letters become ASCII, ligatures split),
invisible characters removed (zero-width, soft hyphen, bidi controls, variation selectors), Unicode
"tag" characters (U+E0020-U+E007E, invisible ASCII smuggling) decoded to the ASCII they shadow, common
Cyrillic/Greek look-alikes mapped to Latin, lower-casing, diacritics stripped (``é`` → ``e``, ``ü`` →
``u``) and whitespace collapsed. ``deleet`` maps digits and symbols used as letters (``1gn0r3`` →
``ignore``); ``despace`` joins letters written one by one (``i g n o r e``, ``i.g.n.o.r.e``).
"""

from __future__ import annotations

import re
import unicodedata

_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufe00-\ufe0f\ufeff]"
)
_TAG_CHARS = re.compile("[\U000e0000-\U000e007f]")
_COMBINING = re.compile(r"[\u0300-\u036f]")
_SPACES = re.compile(r"\s+")
#: Three or more single letters/digits separated by one separator: ``i g n o r e``, ``s.y.s.t.e.m``.
_SPACED_RUN = re.compile(r"(?<![^\W_])(?:[^\W_][ .\-_*/|]){2,}[^\W_](?![^\W_])")
_SEPARATORS = re.compile(r"[ .\-_*/|]")

#: Cyrillic and Greek letters that look like Latin ones, and the Latin letter each one imitates.
_CONFUSABLES = str.maketrans(
    (
        "\u0430\u0432\u0435\u0451\u043a\u043c\u043d\u043e\u0440\u0441\u0442\u0443"
        "\u0445\u0456\u0457\u0458\u0455\u0501\u051b\u051d\u0261\u04bb\u04cf\u0578"
        "\u057d\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0425"
        "\u0406\u0408\u0405\u03b1\u03b2\u03b5\u03b9\u03ba\u03bd\u03bf\u03c1\u03c4"
        "\u03c5\u03c7\u03c9\u0391\u0392\u0395\u0399\u039a\u039c\u039d\u039f\u03a1"
        "\u03a4\u03a7\u03a5\u0396\u0397"
    ),
    ("abeekmhopctyxiijsdqwghlnuabekmhopctxijsabeikvoptuxwabeikmnoptxyzh"),
)

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a",
                       "$": "s", "!": "i", "|": "l", "€": "e", "9": "g"})  # fmt: skip
_HAS_LEET = re.compile(r"[a-z][0-9@$!|€]|[0-9@$!|€][a-z]")


def fold(text: str) -> str:
    """The canonical, lower-case, accent-free form the rules match against (see module docstring)."""
    text = unicodedata.normalize("NFKC", text)
    if _TAG_CHARS.search(text):
        text = _TAG_CHARS.sub(_untag, text)
    text = _INVISIBLE.sub("", text).translate(_CONFUSABLES).lower()
    if not text.isascii():
        text = _COMBINING.sub("", unicodedata.normalize("NFD", text))
        text = unicodedata.normalize("NFC", text)
    return _SPACES.sub(" ", text).strip()


def has_tag_characters(text: str) -> bool:
    """Whether the text hides ASCII in invisible Unicode tag characters."""
    return bool(_TAG_CHARS.search(text))


def deleet(folded: str) -> str | None:
    """Digits and symbols read as letters; ``None`` when the text has no letter/digit mix to undo."""
    if not _HAS_LEET.search(folded):
        return None
    return folded.translate(_LEET)


def despace(folded: str) -> str | None:
    """Letters written one by one joined into words; ``None`` when there are none."""
    if not _SPACED_RUN.search(folded):
        return None
    return _SPACED_RUN.sub(lambda m: _SEPARATORS.sub("", m.group(0)), folded)


def _untag(match: re.Match[str]) -> str:
    code = ord(match.group(0)) - 0xE0000
    return chr(code) if 0x20 <= code <= 0x7E else ""
