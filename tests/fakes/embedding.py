"""TEST DOUBLE of the embedder: one fixed unit vector for every text (no model load)."""

from __future__ import annotations


class ConstantEmbedder:
    """Test double: one fixed unit vector for every text, so every passage is equally relevant."""

    model_name = "test-constant"
    dimension = 8

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [[1.0] + [0.0] * (self.dimension - 1) for _ in texts]

    async def aembed(self, texts: list[str]) -> list[list[float]]:
        return self.embed(texts)

    def count_tokens(self, text: str) -> int:
        return len(text.split())
