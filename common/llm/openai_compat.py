"""Chat model over any OpenAI-compatible HTTP endpoint (OpenAI, vLLM, Ray Serve LLM, our own openai_app).

``POST {base_url}/chat/completions`` with a Bearer key when one is set. 429, 5xx, timeouts and network
errors are retried with :func:`common.retry.retry_async` (exponential backoff, full jitter, the server's
``Retry-After`` honoured); any other 4xx is permanent. Outbound HTTP goes through an injectable
``httpx`` transport so tests never touch the network.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from common.config import LLMSettings
from common.errors import InvalidInput, LLMError, LLMPermanentError, LLMTimeout
from common.llm.base import UsageMeter
from common.logging import get_logger
from common.retry import RetryPolicy, retry_async
from common.schemas import ChatRequest, ChatResponse

log = get_logger(__name__)

_ERROR_BODY_CHARS = 500


class OpenAICompatibleChatModel:
    """:class:`~common.llm.base.ChatModel` speaking the OpenAI chat completions API."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not settings.base_url:
            raise InvalidInput(
                f"llm.base_url is required for the {settings.provider} provider",
                details={"setting": "llm.base_url", "env": "LLM_BASE_URL"},
            )
        self.name = settings.model
        self.usage = UsageMeter()
        self._settings = settings
        self._policy = retry_policy or RetryPolicy(attempts=settings.max_retries + 1)
        self._sleep = sleep
        headers = {"Accept": "application/json"}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._client = httpx.AsyncClient(
            base_url=settings.base_url,
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s),
            transport=transport,
        )

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """One completion, retried on transient failures."""
        started = time.perf_counter()
        body = self._body(request, stream=False)
        data = await retry_async(lambda: self._post_json(body), policy=self._policy, sleep=self._sleep)
        response = _to_response(data, model=self.name, latency_ms=(time.perf_counter() - started) * 1000)
        self.usage.record(response)
        log.info(
            "llm_chat",
            model=self.name,
            prompt_tokens=response.prompt_tokens,
            completion_tokens=response.completion_tokens,
            latency_ms=round(response.latency_ms, 1),
        )
        return response

    async def stream(self, request: ChatRequest) -> AsyncIterator[str]:
        """Yield content deltas from a server-sent-events completion.

        Opening the stream is retried like :meth:`chat`; once text has been yielded a failure raises
        :class:`~common.errors.LLMError`, because replaying would duplicate what the caller already has.
        """
        body = self._body(request, stream=True)
        response = await retry_async(lambda: self._open_stream(body), policy=self._policy, sleep=self._sleep)
        try:
            async for line in response.aiter_lines():
                delta, done = _parse_sse_line(line)
                if done:
                    return
                if delta:
                    yield delta
        except httpx.TimeoutException as exc:
            raise LLMTimeout("LLM stream timed out") from exc
        except httpx.TransportError as exc:
            raise LLMError("LLM stream broke", details={"error": type(exc).__name__}) from exc
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    def _body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        return {
            "model": self._settings.model,
            "messages": [m.model_dump() for m in request.messages],
            "max_tokens": request.max_tokens or self._settings.max_tokens,
            "temperature": (
                self._settings.temperature if request.temperature is None else request.temperature
            ),
            "stream": stream,
        }

    async def _post_json(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._send(body, stream=False)
        _raise_for_status(response, response.text)
        try:
            data = response.json()
        except ValueError as exc:
            raise LLMError(
                "LLM endpoint returned invalid JSON", details={"status": response.status_code}
            ) from exc
        if not isinstance(data, dict):
            raise LLMError("LLM endpoint returned an unexpected body")
        return data

    async def _open_stream(self, body: dict[str, Any]) -> httpx.Response:
        response = await self._send(body, stream=True)
        if response.status_code >= 400:
            text = (await response.aread()).decode("utf-8", "replace")
            await response.aclose()
            _raise_for_status(response, text)
        return response

    async def _send(self, body: dict[str, Any], *, stream: bool) -> httpx.Response:
        request = self._client.build_request("POST", "chat/completions", json=body)
        try:
            return await self._client.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise LLMTimeout(
                "LLM endpoint timed out", details={"timeout_s": self._settings.timeout_s}
            ) from exc
        except httpx.TransportError as exc:
            raise LLMError("LLM endpoint unreachable", details={"error": type(exc).__name__}) from exc


def _raise_for_status(response: httpx.Response, text: str) -> None:
    status = response.status_code
    if status < 400:
        return
    details: dict[str, Any] = {"status": status, "body": text[:_ERROR_BODY_CHARS]}
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is not None:
            details["retry_after_s"] = retry_after
        raise LLMError(f"LLM endpoint answered {status}", details=details)
    raise LLMPermanentError(f"LLM endpoint rejected the request ({status})", details=details)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date; ``None`` when absent or garbled."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _parse_sse_line(line: str) -> tuple[str, bool]:
    """``(delta text, done)`` for one SSE line; comments, blank lines and role-only deltas give ``""``."""
    if not line.startswith("data:"):
        return "", False
    payload = line[len("data:") :].strip()
    if payload == "[DONE]":
        return "", True
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise LLMError("LLM stream sent invalid JSON") from exc
    if "error" in event:
        raise LLMError(
            "LLM stream reported an error", details={"error": str(event["error"])[:_ERROR_BODY_CHARS]}
        )
    choices = event.get("choices") or []
    if not choices:
        return "", False
    content = (choices[0].get("delta") or {}).get("content")
    return (content or ""), False


def _to_response(data: dict[str, Any], *, model: str, latency_ms: float) -> ChatResponse:
    try:
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        return ChatResponse(
            text=choice["message"].get("content") or "",
            model=str(data.get("model") or model),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_ms=latency_ms,
            finish_reason=choice.get("finish_reason"),
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise LLMError("LLM endpoint returned a malformed completion") from exc
