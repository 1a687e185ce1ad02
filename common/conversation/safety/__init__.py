"""Input and output safety guardrails: prompt injection, personal data, toxicity.

Everything here is pure, deterministic and cheap (regular expressions and word lists compiled at
import; well under a millisecond for a chat message), so the orchestrator can call it on every
inbound message, every retrieved chunk and every draft reply::

    from common.conversation import safety

    verdict = safety.detect_injection(message.text)        # InjectionVerdict(is_injection, score, rules)
    toxic = safety.check_toxicity(message.text)            # ToxicityVerdict(is_toxic, score, terms, ...)
    chunk_text = safety.neutralize_context(chunk.text)     # retrieved text made safe to embed as data
    masked = safety.mask_pii(draft, allowed=safety.customer_values(customer_texts))
    stored_prompt = safety.redact_for_audit(rendered_prompt)

Each verdict has ``.decision()`` returning a :class:`common.domain.GuardrailDecision`. The rules,
their limits and measured precision/recall are in ``docs/GUARDRAILS.md``.
"""

from common.conversation.safety.context import context_has_instructions, neutralize_context
from common.conversation.safety.decisions import (
    INJECTION_RULE,
    PII_RULE,
    TOXICITY_RULE,
    InjectionVerdict,
    MaskResult,
    PiiFinding,
    PiiKind,
    ToxicityVerdict,
)
from common.conversation.safety.injection import detect_injection
from common.conversation.safety.pii import customer_values, find_pii, mask_pii, redact_for_audit
from common.conversation.safety.toxicity import check_toxicity

__all__ = [
    "INJECTION_RULE",
    "PII_RULE",
    "TOXICITY_RULE",
    "InjectionVerdict",
    "MaskResult",
    "PiiFinding",
    "PiiKind",
    "ToxicityVerdict",
    "check_toxicity",
    "context_has_instructions",
    "customer_values",
    "detect_injection",
    "find_pii",
    "mask_pii",
    "neutralize_context",
    "redact_for_audit",
]
