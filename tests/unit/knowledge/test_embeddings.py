"""Embedders: the packaged local model (offline, real) and the OpenAI-compatible client (MockTransport)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from common.config import EmbeddingProvider, EmbeddingSettings
from common.errors import EmbeddingError, EmbeddingMismatch
from common.knowledge.embeddings import (
    Embedder,
    EmbeddingPermanentError,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    approx_token_count,
    build_embedder,
    token_counter,
)
from common.retry import RetryPolicy

# --- local model -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local() -> SentenceTransformerEmbedder:
    embedder = build_embedder(EmbeddingSettings())
    assert isinstance(embedder, SentenceTransformerEmbedder)
    return embedder


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def test_local_model_loads_offline_with_the_configured_dimension(local: SentenceTransformerEmbedder) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert isinstance(local, Embedder)
    assert (local.model_name, local.dimension) == ("all-MiniLM-L6-v2", 384)
    vectors = local.embed(["hello", "world", "tents"])
    assert len(vectors) == 3 and all(len(v) == 384 for v in vectors)
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4) for v in vectors)


def test_similar_sentences_are_closer_than_unrelated_ones(local: SentenceTransformerEmbedder) -> None:
    query, related, unrelated = local.embed(
        [
            "How long do I have to return an item?",
            "You have 30 days from delivery to return a product for a refund.",
            "Our Denver store is open every day from 9:00 to 19:00.",
        ]
    )
    assert cosine(query, related) > cosine(query, unrelated) + 0.2


async def test_aembed_matches_embed_and_empty_input_is_empty(local: SentenceTransformerEmbedder) -> None:
    assert await local.aembed([]) == [] == local.embed([])
    (sync,) = local.embed(["waterproof jacket"])
    (async_,) = await local.aembed(["waterproof jacket"])
    assert cosine(sync, async_) == pytest.approx(1.0, abs=1e-5)


def test_batched_vectors_equal_one_at_a_time(local: SentenceTransformerEmbedder) -> None:
    texts = ["short", "a much longer sentence about the Summit 45L backpack and its lifetime warranty"]
    for batched, text in zip(local.embed(texts), texts):
        assert cosine(batched, local.embed([text])[0]) == pytest.approx(1.0, abs=1e-4)


def test_count_tokens_uses_the_model_tokenizer(local: SentenceTransformerEmbedder) -> None:
    assert local.count_tokens("") == 0
    assert local.count_tokens("hello world") == 2  # no [CLS]/[SEP]
    assert local.count_tokens("TrailBlazer") > 1  # word pieces, not words
    counter = token_counter(EmbeddingSettings())
    for text in ["hello world", "The TrailBlazer 2 tent has a 3-year warranty.", "送料は無料です 🏕️"]:
        assert counter(text) == local.count_tokens(text)


def test_wrong_configured_dimension_is_a_mismatch() -> None:
    with pytest.raises(EmbeddingMismatch, match="384"):
        SentenceTransformerEmbedder(EmbeddingSettings(dimension=768))


def test_missing_model_is_a_permanent_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingPermanentError) as info:
        SentenceTransformerEmbedder(EmbeddingSettings(model_path=tmp_path / "nope"))
    assert info.value.retryable is False


# --- OpenAI-compatible API ---------------------------------------------------------------------------


def api_settings(**overrides: Any) -> EmbeddingSettings:
    values: dict[str, Any] = {
        "provider": EmbeddingProvider.OPENAI,
        "model_name": "text-embedding-3-small",
        "dimension": 3,
        "base_url": "http://embeddings.test/v1/",
        "api_key": SecretStr("sk-test"),
        "batch_size": 2,
    }
    return EmbeddingSettings(**{**values, **overrides})


def ok(request: httpx.Request, *, dimension: int = 3) -> httpx.Response:
    inputs = json.loads(request.content)["input"]
    # out of order on purpose: the client must sort by "index"
    data = [
        {"object": "embedding", "index": i, "embedding": [float(i + 1)] * dimension}
        for i in range(len(inputs))
    ]
    return httpx.Response(200, json={"object": "list", "data": data[::-1], "model": "m"})


def make(
    handler: Callable[[httpx.Request], httpx.Response], *, attempts: int = 3, **overrides: Any
) -> tuple[OpenAIEmbedder, list[float]]:
    sleeps: list[float] = []

    async def async_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    embedder = OpenAIEmbedder(
        api_settings(**overrides),
        transport=httpx.MockTransport(handler),
        retry_policy=RetryPolicy(attempts=attempts, base_delay_s=0.01, max_delay_s=0.05),
        sleep=sleeps.append,
        async_sleep=async_sleep,
    )
    return embedder, sleeps


def test_request_shape_and_batching() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return ok(request)

    embedder, _ = make(handler)
    vectors = embedder.embed(["a", "b", "c"])
    assert vectors == [[1.0] * 3, [2.0] * 3, [1.0] * 3]
    assert len(requests) == 2  # batch_size=2
    first = requests[0]
    assert (first.method, str(first.url)) == ("POST", "http://embeddings.test/v1/embeddings")
    assert first.headers["authorization"] == "Bearer sk-test"
    assert json.loads(first.content) == {
        "model": "text-embedding-3-small",
        "input": ["a", "b"],
        "encoding_format": "float",
    }
    assert json.loads(requests[1].content)["input"] == ["c"]
    assert "sk-test" not in repr(api_settings())


@pytest.mark.parametrize("use_async", [False, True])
async def test_429_is_retried_then_succeeds(use_async: bool) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(429, headers={"Retry-After": "2"}, json={"error": "slow down"})
        return ok(request)

    embedder, sleeps = make(handler)
    vectors = await embedder.aembed(["x"]) if use_async else embedder.embed(["x"])
    assert vectors == [[1.0, 1.0, 1.0]]
    assert calls == 2
    assert sleeps == [0.05]  # Retry-After honoured, capped by the policy


@pytest.mark.parametrize("use_async", [False, True])
async def test_400_is_permanent_and_not_retried(use_async: bool) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(400, json={"error": {"message": "input too long"}})

    embedder, sleeps = make(handler)
    with pytest.raises(EmbeddingPermanentError, match="400") as info:
        await embedder.aembed(["x"]) if use_async else embedder.embed(["x"])
    assert calls == 1 and sleeps == []
    assert info.value.retryable is False
    assert "input too long" in info.value.details["body"]


def test_5xx_and_transport_errors_are_retried_a_bounded_number_of_times() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls % 2:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(503, text="overloaded")

    embedder, sleeps = make(handler, attempts=4)
    with pytest.raises(EmbeddingError) as info:
        embedder.embed(["x"])
    assert calls == 4 and len(sleeps) == 3
    assert info.value.retryable is True
    assert not isinstance(info.value, EmbeddingPermanentError)


def test_wrong_vector_length_is_a_mismatch() -> None:
    embedder, _ = make(lambda request: ok(request, dimension=5))
    with pytest.raises(EmbeddingMismatch):
        embedder.embed(["x"])


def test_malformed_response_is_an_embedding_error() -> None:
    embedder, _ = make(lambda request: httpx.Response(200, json={"unexpected": True}), attempts=1)
    with pytest.raises(EmbeddingError, match="malformed"):
        embedder.embed(["x"])


def test_openai_provider_needs_a_base_url_and_counts_tokens_approximately() -> None:
    with pytest.raises(EmbeddingPermanentError, match="base_url"):
        build_embedder(api_settings(base_url=None))
    embedder = build_embedder(api_settings())
    assert isinstance(embedder, OpenAIEmbedder)
    assert token_counter(api_settings()) is approx_token_count
    assert embedder.count_tokens("Hello, world!") == 4
    assert embedder.count_tokens("a" * 40) == 10  # long words cost at least one token per 4 characters
