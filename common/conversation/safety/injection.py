"""Prompt-injection heuristics for customer messages and retrieved documents.

Each rule is a named regular expression with a weight, matched against the folded text (NFKC,
invisible characters removed, look-alike letters mapped, lower case, accents stripped — see
:mod:`common.conversation.safety.normalize`). The same rules run again on variants that undo
obfuscation, and a
rule found only in a variant is reported with the variant as prefix (``base64:ignore_instructions``):

* ``leet`` (``1gn0r3 4ll pr3v10u5``), ``spaced`` (``i g n o r e``, ``i.g.n.o.r.e``), ``reversed``;
* ``rot13`` of the whole text;
* ``base64`` / ``hex`` / ``urlenc`` payloads found in the text, decoded when they decode to readable
  text, and checked recursively (two levels);
* ``tags``: ASCII hidden in invisible Unicode tag characters is decoded by the folding itself and also
  scored on its own (``unicode_tags``).

The score is a noisy-or of the weights of the rules that fired; ``is_injection`` when it reaches
:data:`THRESHOLD`. Strong rules (0.7-0.9) flag on their own: instructions to ignore earlier
instructions, role overrides to an unrestricted persona, system-prompt extraction, chat-template
markup, requests to disable safety. Weak rules (0.3-0.5) — "pretend to be", "no restrictions",
"system prompt" named on its own — flag only in combination. Rules target instructions addressed to
the assistant, so "ignore my previous order" or "the washing instructions" do not match.

Limits: lexical, so a paraphrase none of the rules anticipate passes, and languages other than
English, Spanish, French and German are covered only through obfuscation-independent markup rules.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from dataclasses import dataclass

from common.conversation.safety.decisions import InjectionVerdict
from common.conversation.safety.normalize import deleet, despace, fold, has_tag_characters

THRESHOLD = 0.5
_MAX_DEPTH = 2
_MIN_PRINTABLE = 0.9


@dataclass(frozen=True)
class Rule:
    """A named pattern and how much it alone says "injection"."""

    name: str
    weight: float
    pattern: re.Pattern[str]


def _rule(name: str, weight: float, pattern: str) -> Rule:
    return Rule(name, weight, re.compile(pattern, re.MULTILINE))


_VERB = r"(?:ignore|disregard|forget|skip|override|overwrite|bypass|abandon|discard|neglect|set aside|stop following|do not follow|don'?t follow|never mind)"  # noqa: E501 - one alternation reads best on one line
_DET = r"(?:(?:all|any|every|each|of|the|your|these|those|such|above|and)\s+)*"
_MOD = r"(?:(?:previous|previously|prior|preceding|above|earlier|former|initial|original|old|existing|given|system|developer|safety|default|hidden|programmed|provided|current)\s+)"  # noqa: E501 - one alternation reads best on one line
_TARGET = r"(?:instructions?|directions|prompts?|rules|directives?|guidelines|guardrails|constraints|restrictions|programming|commands|context|system\s+message|policies|training|configuration)"  # noqa: E501 - one alternation reads best on one line
_SAFETY_TARGET = (
    r"(?:(?:safety|content|security|moderation|ethical|ethics)\s+(?:filters?|guidelines|rules|settings|policies|"
    r"protocols|measures|checks|guardrails|restrictions|features|systems?)|(?:your|its|all|any|the\s+(?:ai|bot|model|"
    r"assistant)'?s?)\s+(?:(?:content|safety|security|moderation|ethical)\s+)?(?:filters?|restrictions|guardrails|censorship|guidelines|limitations|rules|programming|"
    r"safeguards|ethics|safety))"
)
_PERSONA = (
    r"(?:dan|stan|dude|aim|evil|unrestricted|unfiltered|uncensored|jailbroken|free|rogue|different|new|developer|"
    r"god|hacker|chatgpt|gpt|no\s+longer|an?\s+(?:ai|assistant|model|chatbot|bot)\s+(?:with(?:out)?|that|who))"
)

RULES: tuple[Rule, ...] = (
    # --- English: override earlier instructions
    _rule("ignore_instructions", 0.9, rf"\b{_VERB}\s+{_DET}{_MOD}+(?:\w+\s+)?{_TARGET}\b"),
    _rule("ignore_instructions", 0.9, rf"\b{_VERB}\s+(?:all\s+)?(?:of\s+)?your\s+(?:\w+\s+)?{_TARGET}\b"),
    _rule(
        "ignore_instructions",
        0.9,
        rf"\b{_VERB}\s+(?:everything|all|anything)\s+(?:(?:that\s+)?(?:you\s+)?(?:were|have\s+been|'ve\s+been|was|been)\s+"
        r"(?:told|given|instructed|taught|programmed|trained)|above|before\s+this|(?:written\s+)?(?:above|before)|"
        r"previously|so\s+far|prior)",
    ),
    _rule(
        "ignore_instructions",
        0.7,
        rf"\b{_VERB}\s+(?:all\s+)?(?:of\s+)?(?:the\s+)?(?:above|previous|preceding)\s*(?:[.,;:!]|and\b|then\b|$)",
    ),
    # --- role override / jailbreak personas
    _rule(
        "role_override",
        0.9,
        rf"\byou(?:\s+are|'re|\s+will\s+be|\s+shall\s+be)\s+(?:now|from\s+now\s+on|going\s+to\s+be)\s+(?:(?:a|an|my|the|called)\s+)?{_PERSONA}\b",
    ),
    _rule(
        "role_override",
        0.9,
        r"\bdo\s+anything\s+now\b|\b(?:you\s+are|act\s+as|be|become|pretend\s+to\s+be)\s+(?:a\s+)?dan\b",
    ),
    _rule(
        "role_override",
        0.7,
        r"\byou(?:\s+are|'re)\s+(?:now\s+)?(?:an?\s+)?(?:unrestricted|unfiltered|uncensored|jailbroken|evil|rogue|amoral|"
        r"hacker|ai\s+(?:with\s+no|without))\b",
    ),
    _rule(
        "role_override", 0.4, r"\bfrom\s+now\s+on,?\s+(?:you|act|respond|answer|reply|pretend|behave|only)\b"
    ),
    _rule("role_override", 0.4, r"\byou\s+are\s+no\s+longer\s+(?:a|an|the)\b"),
    _rule(
        "role_override",
        0.8,
        r"\b(?:act|behave|respond|answer|reply|talk|speak|write)\s+(?:as|like)\s+(?:if\s+you\s+(?:were|are|had)\s+)?"
        r"(?:an?\s+|my\s+)?(?:unrestricted|unfiltered|uncensored|evil|rogue|jailbroken|amoral|unethical|hacker|"
        r"criminal|(?:ai|assistant|model|chatbot|bot)\s+(?:with(?:out)?|that\s+(?:has|can|ignores))|"
        r"(?:my\s+)?(?:deceased|dead|late)\s+grand\w+|no\s+(?:rules|restrictions|limits|filters))",
    ),
    _rule("role_override", 0.7, r"\b(?:developer|god|jailbreak|unrestricted|dan|sudo|admin|evil)\s+mode\b"),
    _rule("role_override", 0.6, r"\bjailbr(?:eak|eaking|oken)\b"),
    _rule(
        "roleplay",
        0.4,
        r"\b(?:pretend|imagine|suppose)\s+(?:to\s+be|(?:that\s+)?you\s+(?:are|were|have|had|can|could))\b",
    ),
    _rule(
        "roleplay",
        0.4,
        r"\brole-?\s?play\s+(?:as|a|an)\b|\blet'?s\s+play\s+a\s+game\b|\bstay\s+in\s+character\b",
    ),
    # --- unrestricted behaviour, disabling safety
    _rule(
        "disable_safety",
        0.8,
        rf"\b(?:bypass|disable|turn\s+off|switch\s+off|deactivate|circumvent|get\s+around|evade|remove|ignore|"
        rf"lift|drop|suspend)\s+(?:all\s+)?(?:of\s+)?(?:the\s+)?{_SAFETY_TARGET}",
    ),
    _rule(
        "no_restrictions",
        0.4,
        r"\b(?:no|without|free\s+(?:of|from)|zero)\s+(?:any\s+)?(?:ethical\s+|moral\s+|content\s+)?"
        r"(?:restrictions|limitations|filters|filtering|censorship|guidelines|boundaries|morals|ethics|rules|content\s+polic\w+)\b",
    ),
    _rule(
        "no_restrictions",
        0.6,
        r"\b(?:not|no\s+longer|never)\s+(?:be\s+)?(?:bound|restricted|limited|constrained)\s+by\b",
    ),
    _rule("no_restrictions", 0.4, r"\b(?:unfiltered|uncensored|unaligned|unmoderated|amoral)\b"),
    # --- system prompt extraction
    _rule(
        "prompt_extraction",
        0.9,
        r"\b(?:reveal|print|repeat|recite|dump|leak|disclose|expose|output|display|show|tell|give|share|write|spell|"
        r"paste|copy|append|include|insert|add|what\s+(?:is|are|was|were))\s+(?:(?:me|us|out|back|all|of|exact|full|complete|entire|whole|"
        r"verbatim)\s+)*(?:your|its)\s+(?:(?:exact|full|complete|entire|whole|original|initial|first|hidden|secret|"
        r"internal|system|developer|pre-?)\s*)*(?:prompt|instructions|rules|guidelines|directives|programming|"
        r"configuration)\b(?!\s+(?:for|on|to|about|of|in|with|regarding|when|if)\b)",
    ),
    _rule(
        "prompt_extraction",
        0.9,
        r"\b(?:reveal|print|repeat|recite|dump|leak|disclose|expose|output|display|show|tell|give|share|write|"
        r"paste|copy|what\s+(?:is|are|was|were))\s+(?:(?:me|us|out|back|all|of|the|exact|full|complete|entire|whole|"
        r"verbatim)\s+)*(?:system|initial|original|hidden|secret|internal|developer|pre-?)\s*(?:prompt|instructions|"
        r"message|directives)",
    ),
    _rule(
        "prompt_extraction",
        0.8,
        r"\b(?:repeat|print|output|copy|recite|echo|reproduce|show|display|tell\s+me|what\s+(?:is|was)|translate|"
        r"summari[sz]e)\s+(?:(?:me|us|back|out|all|of)\s+)*(?:the\s+)?(?:text|words|everything|content|message|"
        r"lines?|instructions)\s+(?:above|before|preceding|prior|you\s+were\s+given)",
    ),
    _rule(
        "prompt_extraction",
        0.7,
        r"\b(?:instructions|rules|prompt|guidelines)\s+(?:that\s+)?you\s+(?:were|have\s+been|got)\s+"
        r"(?:given|told|provided|programmed|trained)",
    ),
    _rule(
        "rewrite_rules",
        0.6,
        r"\b(?:updating|changing|replacing|overriding|overrides|override|rewriting|amending)\s+(?:all\s+)?"
        r"(?:your|the\s+(?:assistant|bot|ai)'?s?)\s+(?:rules|instructions|guidelines|prompt|programming|policies)\b",
    ),
    _rule("prompt_extraction", 0.7, r"\b(?:starting|beginning|begins|starts)\s+with\s+[\"'“]?you\s+are\b"),
    _rule("prompt_extraction", 0.5, r"\bsystem\s*-?\s*prompt\b|\bprompt\s+(?:injection|leak)"),
    _rule(
        "prompt_extraction",
        0.3,
        r"\b(?:system|initial|original|hidden|secret|developer)\s+(?:instructions|message)\b",
    ),
    # --- chat-template markup and fake authority
    _rule(
        "fake_markup",
        0.8,
        r"<\|?\s*(?:im_start|im_end|system|endoftext|eot_id|start_header_id|end_header_id)\s*\|?>|\[/?(?:inst|system|sys)\]"
        r"|<</?sys>>|<\s*/?\s*(?:system|instructions?|context)\s*>",
    ),
    _rule("fake_markup", 0.4, r"^\s*(?:#{1,4}\s*)?(?:system|developer|assistant)\s*(?:message|prompt)?\s*:"),
    _rule("fake_markup", 0.6, r"^\s*#{2,}\s*(?:new\s+)?(?:instructions?|rules|task)\b"),
    _rule(
        "new_instructions",
        0.6,
        r"\b(?:new|updated|revised|real|actual|additional|override)\s+(?:instructions|rules|directives|system\s+prompt|task)"
        r"\s*(?:[:\-]|for\s+you|are\b)",
    ),
    _rule(
        "fake_authority",
        0.6,
        r"\b(?:admin|administrator|developer|system|root|sudo|openai|anthropic)\s+(?:override|command|access|note|notice)\b",
    ),
    _rule("output_hijack", 0.6, r"\bpwned\b|\bi\s+have\s+been\s+(?:pwned|hacked)\b"),
    _rule(
        "decode_and_follow",
        0.6,
        r"\b(?:decode|decipher|unscramble|rot-?13|base-?64|b64|hex(?:adecimal)?|reverse)\b.{0,60}?\b(?:and|then)\s+"
        r"(?:follow|execute|run|obey|do\s+(?:it|what|that)|perform|comply|act\s+on)\b",
    ),
    _rule(
        "data_exfiltration",
        0.7,
        r"\b(?:other|another|every|all)\s+(?:customers?|users?|clients?|people)(?:'s|')?\s+(?:(?:personal|order|account|"
        r"payment|contact|credit\s+card)\s+)?(?:data|orders|details|"
        r"emails?|addresses|information|details|conversations|messages|phone\s+numbers|records|passwords)\b",
    ),
    # --- Spanish
    _rule(
        "ignore_instructions_es",
        0.9,
        r"\b(?:ignora|ignore|ignorar|ignoren|olvida|olvide|olvidar|omite|omitir|descarta|desobedece|salta)\w*\s+"
        r"(?:(?:todas?|todos|las|los|tus|sus|esas|estas|de|lo)\s+)*(?:instrucciones|reglas|indicaciones|ordenes|"
        r"directrices|normas|pautas)\s+(?:anteriores|previas|iniciales|originales|de\s+arriba|del\s+sistema|dadas)",
    ),
    _rule(
        "ignore_instructions_es",
        0.9,
        r"\b(?:ignora|ignore|ignorar|olvida|olvide|olvidar|omite|descarta|desobedece)\w*\s+(?:todas\s+)?(?:tus|sus)\s+"
        r"(?:instrucciones|reglas|indicaciones|directrices|normas|restricciones)\b",
    ),
    _rule(
        "ignore_instructions_es",
        0.8,
        r"\bolvid\w+\s+todo\s+lo\s+(?:anterior|que\s+te\s+(?:dijeron|han\s+dicho|indicaron))",
    ),
    _rule(
        "role_override_es",
        0.6,
        r"\b(?:ahora|a\s+partir\s+de\s+ahora|desde\s+ahora)\s+(?:tu\s+)?(?:eres|seras|actuas|actua|actuaras)\b",
    ),
    _rule(
        "prompt_extraction_es",
        0.8,
        r"\b(?:muestra|revela|dime|imprime|repite|ensena|escribe|cual\s+es|cuales\s+son)\w*\s+(?:(?:me|tu|tus|el|la|"
        r"las|los|su|sus|todo|todas?)\s+)*(?:prompt|(?:instrucciones|indicaciones)\s+(?:del\s+sistema|de\s+sistema|"
        r"iniciales|originales|ocultas|internas|secretas))",
    ),
    _rule(
        "prompt_extraction_es",
        0.9,
        r"\b(?:muestra|revela|imprime|repite)\w*\s+(?:todas\s+)?(?:tus|sus)\s+(?:instrucciones|reglas)\b(?!\s+(?:de|para|sobre)\s)",
    ),
    _rule(
        "prompt_extraction_es", 0.5, r"\bprompt\s+(?:del|de)\s+sistema\b|\binstrucciones\s+del\s+sistema\b"
    ),
    _rule(
        "no_restrictions_es",
        0.4,
        r"\bsin\s+(?:ninguna\s+|ningun\s+)?(?:restricciones|filtros|censura|limites|reglas\s+eticas)\b",
    ),
    _rule("role_override_es", 0.7, r"\bmodo\s+(?:desarrollador|dan|dios|sin\s+restricciones)\b"),
    _rule("roleplay_es", 0.4, r"\b(?:finge|fingir|haz\s+como\s+si|actua\s+como\s+si|imagina\s+que\s+eres)\b"),
    # --- French
    _rule(
        "ignore_instructions_fr",
        0.9,
        r"\b(?:ignore|ignorez|ignorer|oublie|oubliez|oublier|neglige|negligez)\s+(?:(?:toutes?|tous|les|tes|vos|ces|de|"
        r"des)\s+)*(?:instructions|consignes|regles|directives|indications)\s+(?:precedentes|anterieures|initiales|"
        r"ci-dessus|du\s+systeme|donnees|d'origine)",
    ),
    _rule(
        "ignore_instructions_fr",
        0.9,
        r"\b(?:ignore|ignorez|ignorer|oublie|oubliez|oublier)\s+(?:toutes\s+)?(?:tes|vos)\s+(?:instructions|consignes|"
        r"regles|directives|restrictions)\b",
    ),
    _rule(
        "ignore_instructions_fr",
        0.8,
        r"\boubli\w*\s+tout\s+ce\s+(?:qu'on\s+t'a\s+dit|qui\s+precede|qu'on\s+vous\s+a\s+dit)",
    ),
    _rule(
        "role_override_fr",
        0.6,
        r"\b(?:tu\s+es|vous\s+etes)\s+(?:maintenant|desormais|a\s+present)\b|\ba\s+partir\s+de\s+maintenant,?\s+"
        r"(?:tu|vous)\s+(?:es|etes|dois|devez|agis|agissez|ignores|ignorez)\b",
    ),
    _rule(
        "prompt_extraction_fr",
        0.8,
        r"\b(?:revele|revelez|montre|montrez|affiche|affichez|repete|repetez|donne|donnez|ecris|ecrivez|dis|dites|"
        r"quel\s+est)(?:-moi|-nous)?\s+(?:(?:moi|nous|ton|ta|tes|votre|vos|le|la|les)\s+)*(?:prompt|invite|"
        r"(?:instructions|consignes)\s+(?:systeme|du\s+systeme|initiales|cachees|secretes))",
    ),
    _rule("prompt_extraction_fr", 0.5, r"\b(?:prompt|invite)\s+(?:systeme|du\s+systeme)\b"),
    _rule("role_override_fr", 0.7, r"\bmode\s+(?:developpeur|dan|sans\s+restrictions?)\b"),
    _rule("no_restrictions_fr", 0.4, r"\bsans\s+(?:aucune\s+)?(?:restrictions?|filtres?|censure|limites)\b"),
    _rule(
        "roleplay_fr",
        0.4,
        r"\b(?:fais|faites)\s+comme\s+si\b|\b(?:imagine|imaginez)\s+que\s+(?:tu\s+es|vous\s+etes)\b",
    ),
    # --- German (accents folded: ü -> u)
    _rule(
        "ignore_instructions_de",
        0.9,
        r"\b(?:ignoriere|ignorier|ignorieren|vergiss|vergessen|missachte|missachten|uberspringe)\s+(?:sie\s+)?"
        r"(?:(?:alle|samtliche|die|deine|ihre|bisherigen|vorherigen|vorigen|obigen|fruheren|ursprunglichen|"
        r"vorangegangenen)\s+)+(?:anweisungen|instruktionen|regeln|vorgaben|befehle|richtlinien|anordnungen)",
    ),
    _rule(
        "ignore_instructions_de",
        0.8,
        r"\bvergiss\s+alles\s*,?\s+(?:bisherige|vorherige|oben|was\s+(?:dir|man\s+dir)\s+gesagt)",
    ),
    _rule(
        "role_override_de",
        0.6,
        r"\bdu\s+bist\s+(?:jetzt|nun|ab\s+sofort|ab\s+jetzt)\b|\bab\s+(?:sofort|jetzt)\s+(?:bist\s+du|antwortest\s+du|"
        r"verhaltst\s+du|ignorierst\s+du)\b",
    ),
    _rule(
        "prompt_extraction_de",
        0.8,
        r"\b(?:zeige|zeig|verrate|gib|nenne|wiederhole|drucke|schreib|schreibe)\s+(?:mir\s+|uns\s+)?(?:(?:deinen|deine|"
        r"dein|ihren|ihre|den|die)\s+)*(?:system-?\s*prompt|prompt|systemanweisung\w*)|\b(?:zeige|zeig|verrate|nenne|"
        r"wiederhole|drucke)\s+(?:mir\s+|uns\s+)?(?:deine|ihre)\s+(?:anweisungen|instruktionen|regeln)\b(?!\s+(?:fur|zu|zum|zur)\b)",
    ),
    _rule("prompt_extraction_de", 0.5, r"\bsystem-?\s?prompt\b|\bsystemanweisung\w*"),
    _rule("role_override_de", 0.7, r"\b(?:entwicklermodus|developer-?modus|dan-?modus|gottmodus)\b"),
    _rule(
        "no_restrictions_de",
        0.4,
        r"\bohne\s+(?:jegliche\s+|irgendwelche\s+)?(?:einschrankungen|filter|zensur|beschrankungen)\b",
    ),
    _rule(
        "roleplay_de", 0.4, r"\b(?:tu|tue)\s+so\s+als\b|\bverhalte\s+dich\s+wie\b|\bspiele?\s+die\s+rolle\b"
    ),
)

#: Patterns for letters joined by ``despace`` ("i g n o r e a l l ..." becomes one word).
_COMPACT_RULES: tuple[Rule, ...] = (
    _rule("ignore_instructions", 0.9, r"(?:ignore|disregard|forget|override|bypass)(?:all|any)?(?:of)?(?:the|your)?(?:previous|prior|above|earlier|preceding|system)?(?:instructions|prompts?|rules|directives|guidelines)"),  # noqa: E501 - one alternation reads best on one line
    _rule("role_override", 0.8, r"youarenow|doanythingnow|developermode|jailbreak|dan(?:mode)?$"),
    _rule("prompt_extraction", 0.8, r"(?:reveal|print|show|repeat|output)(?:me)?(?:your|the)(?:system|initial|hidden)?(?:prompt|instructions)|systemprompt"),  # noqa: E501 - one alternation reads best on one line
)  # fmt: skip

_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])")
_BASE64URL = re.compile(r"(?<![A-Za-z0-9_\-=])[A-Za-z0-9_\-]{16,}={0,2}(?![A-Za-z0-9_\-=])")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:(?:0x|\\x)?[0-9A-Fa-f]{2}[\s:,]?){8,}")
_URLENC = re.compile(r"(?:%[0-9A-Fa-f]{2}){4,}")
_NOT_HEX = re.compile(r"0x|\\x|[\s:,]")
_ROT13 = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZABCDEFGHIJKLM",
)


def detect_injection(text: str) -> InjectionVerdict:
    """Score ``text`` for attempts to override, replace or extract the assistant's instructions."""
    weights = _scan(text, depth=0)
    return _verdict(weights)


def _verdict(weights: dict[str, float]) -> InjectionVerdict:
    miss = 1.0
    for weight in weights.values():
        miss *= 1.0 - weight
    score = round(1.0 - miss, 4)
    rules = tuple(sorted(weights, key=lambda name: (-weights[name], name)))
    return InjectionVerdict(is_injection=score >= THRESHOLD, score=score, rules=rules)


def _scan(text: str, *, depth: int) -> dict[str, float]:
    """Rule name → weight over the text, its de-obfuscated variants and its decoded payloads."""
    folded = fold(text)
    found = _match(folded, RULES)
    for prefix, variant, rules in _variants(folded):
        _merge(found, _match(variant, rules), prefix=prefix)
    if has_tag_characters(text):
        found["unicode_tags"] = max(found.get("unicode_tags", 0.0), 0.5)
    if depth < _MAX_DEPTH:
        for prefix, decoded in _payloads(text):
            inner = _scan(decoded, depth=depth + 1)
            _merge(found, inner, prefix=prefix)
    return found


def _variants(folded: str) -> list[tuple[str, str, tuple[Rule, ...]]]:
    variants: list[tuple[str, str, tuple[Rule, ...]]] = [
        ("rot13", folded.translate(_ROT13), RULES),
        ("reversed", folded[::-1], RULES),
    ]
    leet = deleet(folded)
    if leet is not None:
        variants.append(("leet", leet, RULES))
    for prefix, base in (("spaced", folded), ("leet+spaced", leet)):
        joined = despace(base) if base is not None else None
        if joined is not None:
            variants.append((prefix, joined, RULES + _COMPACT_RULES))
    return variants


def _match(text: str, rules: tuple[Rule, ...]) -> dict[str, float]:
    found: dict[str, float] = {}
    for rule in rules:
        if rule.weight > found.get(rule.name, 0.0) and rule.pattern.search(text):
            found[rule.name] = rule.weight
    return found


def _merge(found: dict[str, float], extra: dict[str, float], *, prefix: str) -> None:
    """Add rules seen only in a variant, named ``prefix:rule``; not repeated if seen plainly."""
    for name, weight in extra.items():
        base = name.rsplit(":", 1)[-1]
        if found.get(base, 0.0) >= weight:
            continue
        key = f"{prefix}:{name}"
        found[key] = max(found.get(key, 0.0), weight)


def _payloads(text: str) -> list[tuple[str, str]]:
    """Readable text hidden as base64, hex or percent-encoding."""
    decoded: list[tuple[str, str]] = []
    for match in _BASE64.finditer(text):
        _add(decoded, "base64", _b64(match.group(0), altchars=None))
    if "-" in text or "_" in text:
        for match in _BASE64URL.finditer(text):
            _add(decoded, "base64", _b64(match.group(0), altchars=b"-_"))
    for match in _HEX.finditer(text):
        _add(decoded, "hex", _unhex(match.group(0)))
    if "%" in text:
        for match in _URLENC.finditer(text):
            _add(decoded, "urlenc", urllib.parse.unquote(match.group(0), errors="strict"))
    return decoded


def _add(out: list[tuple[str, str]], prefix: str, value: str | None) -> None:
    if value and _readable(value) and (prefix, value) not in out:
        out.append((prefix, value))


def _b64(token: str, *, altchars: bytes | None) -> str | None:
    padded = token + "=" * (-len(token) % 4)
    try:
        raw = base64.b64decode(padded, altchars=altchars, validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def _unhex(token: str) -> str | None:
    digits = _NOT_HEX.sub("", token)
    if len(digits) % 2:
        digits = digits[:-1]
    try:
        return bytes.fromhex(digits).decode("utf-8")
    except ValueError:
        return None


def _readable(value: str) -> bool:
    """Decoded bytes that look like words, not binary noise (which random tokens decode to)."""
    if len(value) < 6:
        return False
    printable = sum(ch.isprintable() or ch.isspace() for ch in value)
    letters = sum(ch.isalpha() or ch == " " for ch in value)
    return printable / len(value) >= _MIN_PRINTABLE and letters / len(value) >= 0.6


__all__ = ["RULES", "THRESHOLD", "Rule", "detect_injection"]
