"""Optional second pass over retrieved candidates: one small Protocol and a cheap lexical implementation.

Retrieval hands ``retrieval.candidates`` fused chunks to a :class:`Reranker`, which returns the best
``top_k`` in a new order. Rerankers reorder only: each chunk keeps its ``score`` (dense cosine, which
``retrieval.min_score`` gates on). :class:`LexicalReranker` needs no model; it is off by default
(``retrieval.reranker = "none"``) because RRF already weighs exact terms. A cross-encoder would implement
the same Protocol; none is shipped, so no model is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Protocol, runtime_checkable

from common.config import RetrievalSettings
from common.knowledge.vectorstore import lexical_tokens
from common.schemas import RetrievedChunk


@runtime_checkable
class Reranker(Protocol):
    """Reorders candidate chunks for a query."""

    def rerank(self, query: str, chunks: Sequence[RetrievedChunk], *, top_k: int) -> list[RetrievedChunk]:
        """The best ``top_k`` of ``chunks`` for ``query``, best first."""
        ...


class LexicalReranker:
    """Orders by query-term coverage: distinct query words found in the chunk's heading path or text,
    then adjacent query-word pairs found in the same order (phrases like "restocking fee"); ties keep the
    incoming (fused) order. Cheap, deterministic, language-agnostic for space-separated scripts."""

    def rerank(self, query: str, chunks: Sequence[RetrievedChunk], *, top_k: int) -> list[RetrievedChunk]:
        """See the class docstring."""
        words = list(dict.fromkeys(lexical_tokens(query)))
        if not words:
            return list(chunks[:top_k])
        pairs = set(pairwise(words))

        def key(indexed: tuple[int, RetrievedChunk]) -> tuple[int, int, int]:
            rank, chunk = indexed
            tokens = lexical_tokens(f"{chunk.heading_path}\n{chunk.text}")
            vocabulary = set(tokens)
            phrases = len(pairs & set(pairwise(tokens)))
            return (-sum(w in vocabulary for w in words), -phrases, rank)

        return [chunk for _, chunk in sorted(enumerate(chunks), key=key)[:top_k]]


def build_reranker(retrieval: RetrievalSettings) -> Reranker | None:
    """The reranker ``retrieval.reranker`` names, or ``None`` for ``"none"``."""
    if retrieval.reranker == "lexical":
        return LexicalReranker()
    return None
