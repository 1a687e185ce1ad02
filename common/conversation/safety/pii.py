"""Personal data in text: find it, and mask what the customer did not give us themselves.

Detectors, each a regular expression compiled at import plus a validator:

* ``email``: ``local@domain.tld``.
* ``card``: 13-19 digits, optionally grouped by spaces or hyphens, valid by Luhn and starting with a
  known issuer prefix (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro); a number
  glued to a word (``ORD-4539…``) or right after "order"/"tracking"/"invoice"/… is an identifier.
* ``iban``: country code, two check digits and the country's exact length (grouped or not), valid by
  the ISO 13616 mod-97 check.
* ``phone``: international (``+`` or ``00``), ``(415) 555-0132``, ``415-555-0132`` and trunk-``0``
  national numbers with 9-12 digits are phones; other digit groups and bare digit runs are phones only
  after a cue word (call, phone, tel, mobile, WhatsApp, móvil, Handy, portable, …) and never right
  after an identifier cue (order, tracking, invoice, SKU, pedido, commande, Bestellung, …). Dates,
  prices and long tracking numbers do not fit the shapes.
* ``address``: English ``<number> <Capitalised words> <Street|Ave|Road|…>`` with an optional unit,
  Spanish ``Calle/Avenida/Paseo … <number>``, French ``<number> rue/avenue/boulevard …``, German
  ``…straße/weg/platz <number>`` and P.O. boxes. The span is the street line, not city or postcode.

Overlaps are resolved by precedence email > iban > card > phone > address, then by length.

Limits: names, dates of birth, national ids and free-form addresses without a street word are not
detected; obfuscated emails ("name at domain dot com") are not either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from common.conversation.safety.decisions import MaskResult, PiiFinding, PiiKind

_EMAIL = re.compile(
    r"(?<![\w.+%-])[^\W_][\w.%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b"
)
_CARD = re.compile(r"(?<![\w#/.,-])(?<!\d )\d(?:[ -]?\d){12,18}(?![\w-]|[.,]\d| \d)")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){10,32}")
_PHONE = re.compile(
    r"(?<![\w+#/.,-])(?<!\d )(?:"
    r"(?P<intl>(?:\+|00)\d{1,3}[\s.-]?(?:\(0?\d{1,4}\)[\s.-]?)?\d{1,5}(?:[\s.-]?\d{1,5}){1,5})"
    r"|(?P<paren>\(\d{2,5}\)[\s.-]?\d{3,4}[\s.-]?\d{3,4})"
    r"|(?P<nanp>\d{3}[.-]\d{3}[.-]\d{4}|\d{3} \d{3} \d{4})"
    r"|(?P<trunk>0\d{1,4}(?:[\s.-]\d{2,8}){1,4})"
    r"|(?P<loose>\d{2,4}(?:[\s.-]\d{2,4}){2,4}|\d{8,12})"
    r")(?![\w-]|[.,]\d|\s\d)"
)
_ADDRESS = re.compile(
    "|".join(
        (
            # English: 221B Baker Street, 1600 Pennsylvania Ave NW, Apt 4
            r"\b\d{1,5}[A-Za-z]?\s+(?:(?:[NSEW]\.?|North|South|East|West)\s+)?(?:(?:[A-Z][a-z]*|\d{1,3}(?:st|nd|rd|th))\.?\s+){1,5}"
            r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Circle|Cir|"
            r"Highway|Hwy|Parkway|Pkwy|Square|Sq|Crescent|Close)\b\.?(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b)?"
            r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl)\.?\s*#?\s*[A-Za-z0-9-]+|,?\s+#\s?\d+[A-Za-z]?)?",
            # Spanish: Calle Mayor 12, 3º B; Avenida de la Constitución, nº 5
            r"(?:\b(?i:calle|avenida|avda\.?|paseo|plaza|pza\.?|carrera|camino|ronda|travesía)|\bC/)\s*"
            r"(?:(?:de|del|la|las|los|el|y)\s+)*[A-ZÁÉÍÓÚÑ][\wáéíóúñ]*\.?(?:\s+(?:(?:de|del|la|las|los|el|y)\s+)*"
            r"[A-ZÁÉÍÓÚÑ][\wáéíóúñ]*\.?){0,3},?\s+(?:n[º°o]\.?\s*)?\d{1,4}[A-Za-z]?\b(?:,?\s*\d{1,2}\s?[º°ª]\s*[A-Za-z]?\b)?",
            # French: 12 rue de la Paix; 5 bis avenue Victor Hugo
            r"\b\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?i:rue|avenue|av\.|boulevard|bd|place|allée|allee|chemin|impasse|quai|"
            r"route|cours)\s+(?:(?:de|du|des|la|le|l'|d')\s*)*[A-ZÉÈÀÂ][\w'\u2019-]*(?:\s+(?:(?:de|du|des|la|le|l'|d'|aux?)\s*)*"
            r"[A-ZÉÈÀÂ][\w'\u2019-]*){0,3}",
            # German: Hauptstraße 5, Musterstr. 12a, Berliner Allee 3
            r"\b[A-ZÄÖÜ][a-zäöüß]+(?:-[A-ZÄÖÜ][a-zäöüß]+)*(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|ufer)"
            r"\s*\d{1,4}\s?[a-z]?\b",
            r"\b[A-ZÄÖÜ][a-zäöüß]+(?:er|e)?\s+(?:Straße|Strasse|Weg|Platz|Allee|Gasse|Ring)\s+\d{1,4}\s?[a-z]?\b",
            # P.O. boxes
            r"\b(?:P\.?\s?O\.?\s+Box|(?i:apartado)(?:\s+de\s+correos)?|Postfach|(?i:boîte\s+postale|BP))\s+\d{1,6}\b",
        )
    )
)
#: Words after which a number is an identifier, not a phone or a card.
_ID_CUE = re.compile(
    r"(?:order|orders|tracking|track|invoice|receipt|ref|reference|sku|item|model|serial|ticket|case|confirmation|"
    r"shipment|parcel|package|awb|rma|pedido|factura|seguimiento|commande|facture|suivi|bestellung|rechnung|"
    r"sendung|sendungsnummer|auftrag)\w*\s*(?:number|num|no|nr|n[º°o]|id|code|numero|número|nummer)?\.?\s*[:#]?\s*$",
    re.IGNORECASE,
)
#: Identifier words anywhere before a bare digit run make it an identifier even after "number".
_ID_WORD = re.compile(
    r"\b(?:order|tracking|invoice|receipt|ref|reference|sku|item|model|serial|ticket|case|account|customer|member|"
    r"membership|loyalty|confirmation|shipment|parcel|pedido|factura|cuenta|commande|facture|compte|bestellung|"
    r"rechnung|konto|kunden\w*)\b",
    re.IGNORECASE,
)
_PHONE_CUE = re.compile(
    r"(?:phone|call|calling|tel|telephone|mobile|cell|whatsapp|sms|text\s+me|reach\s+me|contact|number|fax|"
    r"m[óo]vil|tel[ée]fono|llamar|llama|handy|telefon|rufnummer|anrufen|portable|t[ée]l[ée]phone|appel|"
    r"appelez|numéro)",
    re.IGNORECASE,
)
_CUE_WINDOW = 40
_CARD_PREFIX = re.compile(
    r"^(?:4|5[1-5]|2[2-7]|3[47]|6011|64[4-9]|65|62|35|30[0-5]|36|38|39|50|5[6-9]|6[0-9])"
)
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")
_NON_DIGIT = re.compile(r"\D")
_SPACE = re.compile(r"\s+")

IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24,
    "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
    "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}  # fmt: skip

_PRECEDENCE = {PiiKind.EMAIL: 0, PiiKind.IBAN: 1, PiiKind.CARD: 2, PiiKind.PHONE: 3, PiiKind.ADDRESS: 4}


def find_pii(text: str) -> list[PiiFinding]:
    """Every email, phone, payment card, IBAN and street address in ``text``, in order, not overlapping."""
    candidates = [*_emails(text), *_ibans(text), *_cards(text), *_phones(text), *_addresses(text)]
    candidates.sort(key=lambda f: (_PRECEDENCE[f.kind], -(f.end - f.start), f.start))
    chosen: list[PiiFinding] = []
    for finding in candidates:
        if all(finding.end <= kept.start or finding.start >= kept.end for kept in chosen):
            chosen.append(finding)
    return sorted(chosen, key=lambda f: f.start)


def mask_pii(text: str, *, allowed: Iterable[str] = ()) -> MaskResult:
    """Replace each finding by its token (``[email]``, ``[phone]``, ...) unless its value is in ``allowed``.

    ``allowed`` holds values this customer supplied in this conversation; they are compared normalised
    (digits only for phones and cards, ignoring a country code or trunk ``0`` on phones; lower case for
    emails; upper-case alphanumerics for IBANs; lower case, single-spaced for addresses).
    """
    findings = find_pii(text)
    permitted = _AllowList(allowed)
    pieces: list[str] = []
    masked: dict[str, None] = {}
    cursor = 0
    for finding in findings:
        if permitted.covers(finding):
            continue
        pieces.append(text[cursor : finding.start])
        pieces.append(finding.kind.token)
        masked[finding.kind.value] = None
        cursor = finding.end
    pieces.append(text[cursor:])
    return MaskResult(text="".join(pieces), findings=findings, masked_kinds=tuple(masked))


def redact_for_audit(text: str) -> str:
    """``text`` with every finding masked: for storing rendered prompts and logs."""
    return mask_pii(text).text


def customer_values(texts: Iterable[str]) -> tuple[str, ...]:
    """The personal data values found in the customer's own messages: the ``allowed`` for :func:`mask_pii`."""
    return tuple(dict.fromkeys(f.value for text in texts for f in find_pii(text)))


def luhn_valid(digits: str) -> bool:
    """The Luhn mod-10 check every payment card number passes."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616: known country, its exact length, and the mod-97 check equal to 1."""
    iban = _NON_ALNUM.sub("", iban).upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _emails(text: str) -> list[PiiFinding]:
    return [_finding(PiiKind.EMAIL, m, text) for m in _EMAIL.finditer(text)]


def _cards(text: str) -> list[PiiFinding]:
    found = []
    for match in _CARD.finditer(text):
        digits = _NON_DIGIT.sub("", match.group(0))
        if not 13 <= len(digits) <= 19 or not _CARD_PREFIX.match(digits) or not luhn_valid(digits):
            continue
        if _ID_CUE.search(text[max(0, match.start() - _CUE_WINDOW) : match.start()]):
            continue
        found.append(_finding(PiiKind.CARD, match, text))
    return found


def _ibans(text: str) -> list[PiiFinding]:
    found = []
    for match in _IBAN.finditer(text):
        country = match.group(0)[:2].upper()
        length = IBAN_LENGTHS.get(country)
        if length is None:
            continue
        end = _end_after_alnum(text, start=match.start(), count=length)
        if end is None or (end < len(text) and text[end].isalnum()):
            continue
        if iban_valid(text[match.start() : end]):
            found.append(PiiFinding(PiiKind.IBAN, match.start(), end, text[match.start() : end]))
    return found


def _phones(text: str) -> list[PiiFinding]:
    found = []
    for match in _PHONE.finditer(text):
        digits = len(_NON_DIGIT.sub("", match.group(0)))
        before = text[max(0, match.start() - _CUE_WINDOW) : match.start()]
        shape = match.lastgroup
        if shape == "intl" and match.group(0).startswith("+"):
            ok = 8 <= digits <= 15
        elif _ID_CUE.search(before):
            ok = False
        elif shape in ("paren", "nanp"):
            ok = 10 <= digits <= 12
        elif shape == "intl":
            ok = 8 <= digits <= 15
        elif shape == "trunk":
            ok = 9 <= digits <= 12 or (digits >= 7 and bool(_PHONE_CUE.search(before)))
        else:
            ok = 8 <= digits <= 12 and bool(_PHONE_CUE.search(before)) and not _ID_WORD.search(before)
        if ok:
            found.append(_finding(PiiKind.PHONE, match, text))
    return found


def _addresses(text: str) -> list[PiiFinding]:
    found = []
    for match in _ADDRESS.finditer(text):
        end = match.end()
        while end > match.start() and text[end - 1] in " ,.":
            end -= 1
        found.append(PiiFinding(PiiKind.ADDRESS, match.start(), end, text[match.start() : end]))
    return found


def _finding(kind: PiiKind, match: re.Match[str], text: str) -> PiiFinding:
    return PiiFinding(kind, match.start(), match.end(), text[match.start() : match.end()])


def _end_after_alnum(text: str, *, start: int, count: int) -> int | None:
    """Index just after the ``count``-th alphanumeric character from ``start``, skipping single spaces."""
    seen = 0
    for index in range(start, len(text)):
        char = text[index]
        if char.isalnum():
            seen += 1
            if seen == count:
                return index + 1
        elif char != " ":
            return None
    return None


class _AllowList:
    """Values the customer supplied, in the normalised forms findings are compared by."""

    def __init__(self, values: Iterable[str]) -> None:
        self.texts: set[str] = set()
        self.digits: set[str] = set()
        for value in values:
            self.texts.add(_SPACE.sub(" ", value.strip().lower()))
            self.texts.add(_NON_ALNUM.sub("", value).lower())
            digits = _NON_DIGIT.sub("", value)
            if len(digits) >= 7:
                self.digits.add(digits.lstrip("0"))

    def covers(self, finding: PiiFinding) -> bool:
        if finding.kind in (PiiKind.PHONE, PiiKind.CARD):
            digits = _NON_DIGIT.sub("", finding.value).lstrip("0")
            if finding.kind is PiiKind.CARD:
                return digits in self.digits
            return any(_same_phone(digits, known) for known in self.digits)
        if finding.kind is PiiKind.IBAN:
            return _NON_ALNUM.sub("", finding.value).lower() in self.texts
        return _SPACE.sub(" ", finding.value.strip().lower()) in self.texts


def _same_phone(a: str, b: str) -> bool:
    """Equal up to a country code: one is a suffix of the other and the shorter has 8+ digits."""
    short, long = sorted((a, b), key=len)
    return len(short) >= 8 and long.endswith(short) and len(long) - len(short) <= 3
