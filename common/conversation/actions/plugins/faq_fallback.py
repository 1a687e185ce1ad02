"""``faq_fallback``: the best entry of the brand's own knowledge, quoted, when generation fails.

The orchestrator runs it when the chat model is down or times out; retrieval is filtered by the
brand's tenant and brand like every other vector query.
"""

from __future__ import annotations

from typing import Any

from common.conversation.actions.base import ActionContext, ActionPlugin, ActionResult, PluginDeps, RetrieveFn

NAME = "faq_fallback"
#: Runs only once the customer confirms (the plugin\'s ``side_effect``).
SIDE_EFFECT = False
TOP_K = 3
QUOTE_MAX_CHARS = 300


class FaqFallback:
    """The ``faq_fallback`` plugin."""

    name = NAME
    description = "Quote the brand's best knowledge entry for the customer's question."
    parameters: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
    side_effect = SIDE_EFFECT

    def __init__(self, retrieve: RetrieveFn, min_score: float) -> None:
        self._retrieve = retrieve
        self._min_score = min_score

    def confirmation(self, arguments: dict[str, Any]) -> str:
        """Read-only: never asked."""
        return ""

    def reply(self, result: ActionResult) -> str:
        """The quote itself."""
        return result.summary

    async def run(self, arguments: dict[str, Any], context: ActionContext) -> ActionResult:
        """Retrieve for the question and quote the top passage with its source."""
        chunks = await self._retrieve(context.tenant_id, context.brand_id, context.question, TOP_K)
        relevant = [c for c in chunks if c.score >= self._min_score]
        if not relevant:
            return ActionResult(status="failed", summary="No matching entry in the knowledge base.")
        best = max(relevant, key=lambda c: c.score)
        where = f"{best.source} ({best.heading_path})" if best.heading_path else best.source
        text = " ".join(best.text.split())
        if len(text) > QUOTE_MAX_CHARS:
            text = text[:QUOTE_MAX_CHARS].rsplit(" ", 1)[0] + "…"
        return ActionResult(
            status="succeeded",
            summary=f"From our help pages, {where}: {text}",
            data={"chunk_id": best.chunk_id, "source": best.source, "score": best.score},
        )


def build(deps: PluginDeps) -> ActionPlugin | None:
    """Enabled whenever retrieval is available."""
    return FaqFallback(deps.retrieve, deps.min_score) if deps.retrieve is not None else None
