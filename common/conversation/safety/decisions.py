"""What the safety guardrails return: small frozen verdicts, each convertible to a ``GuardrailDecision``.

The verdicts carry explainable reasons (rule names, matched terms, finding kinds) and never the matched
text itself where that text could be personal data, so they can be logged and stored as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from common.domain import GuardrailDecision

INJECTION_RULE = "prompt_injection"
PII_RULE = "pii"
TOXICITY_RULE = "toxicity"


class PiiKind(StrEnum):
    """Kinds of personal data :func:`common.conversation.safety.find_pii` detects; the value is the mask
    token's name."""

    EMAIL = "email"
    PHONE = "phone"
    CARD = "card"
    IBAN = "iban"
    ADDRESS = "address"

    @property
    def token(self) -> str:
        """The text that replaces a masked value, e.g. ``[email]``."""
        return f"[{self.value}]"


@dataclass(frozen=True)
class InjectionVerdict:
    """Whether a text tries to override the assistant's instructions, and which rules said so."""

    is_injection: bool
    score: float
    rules: tuple[str, ...]

    def decision(self) -> GuardrailDecision:
        """``block`` with the rule names when flagged, else ``pass``."""
        if self.is_injection:
            return GuardrailDecision(INJECTION_RULE, "block", f"rules={','.join(self.rules)}")
        return GuardrailDecision(INJECTION_RULE, "pass", f"score={self.score:.2f}")


@dataclass(frozen=True)
class PiiFinding:
    """One piece of personal data: its kind and its ``[start, end)`` span in the scanned text."""

    kind: PiiKind
    start: int
    end: int
    value: str


@dataclass(frozen=True)
class MaskResult:
    """The masked text, every finding (masked or allowed) and the kinds that were masked."""

    text: str
    findings: list[PiiFinding] = field(default_factory=list)
    masked_kinds: tuple[str, ...] = ()

    def decision(self) -> GuardrailDecision:
        """``mask`` with the masked kinds (never the values) when anything was masked, else ``pass``."""
        if self.masked_kinds:
            return GuardrailDecision(PII_RULE, "mask", f"masked={','.join(self.masked_kinds)}")
        return GuardrailDecision(PII_RULE, "pass", "")


@dataclass(frozen=True)
class ToxicityVerdict:
    """Whether a text is abusive, its score in ``[0, 1]`` and the list terms that matched."""

    is_toxic: bool
    score: float
    terms: tuple[str, ...]
    categories: tuple[str, ...] = ()

    def decision(self, *, action: str = "block") -> GuardrailDecision:
        """``action`` (``block`` or ``escalate``) with the matched terms when toxic, else ``pass``."""
        if self.is_toxic:
            return GuardrailDecision(TOXICITY_RULE, action, f"terms={','.join(self.terms)}")
        return GuardrailDecision(TOXICITY_RULE, "pass", f"score={self.score:.2f}")
