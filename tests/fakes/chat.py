"""TEST DOUBLES of the chat model (the :class:`common.llm.base.ChatModel` interface), in one place.

* :class:`ScriptedChatModel`: answers with ``script(request)`` (a string for a fixed answer), records
  every request; optionally waits ``delay_s`` first, long enough for racing callers to overlap.
* :class:`StreamingScriptedChatModel`: the same, and ``stream`` yields the answer word by word with
  ``step_s`` between words (a model that streams, as an OpenAI-compatible endpoint does).
* :class:`EchoChatModel`: echoes the last user message, usage in word counts; may raise instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from common.schemas import ChatRequest, ChatResponse

Script = Callable[[ChatRequest], str]


class ScriptedChatModel:
    """TEST DOUBLE: answers with ``script(request)`` (or ``script`` itself when it is a string)."""

    name = "scripted"

    def __init__(self, script: Script | str, *, delay_s: float = 0.0) -> None:
        self.script = script
        self.delay_s = delay_s
        self.requests: list[ChatRequest] = []

    @property
    def calls(self) -> int:
        """How many requests it answered."""
        return len(self.requests)

    async def chat(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        text = self.script if isinstance(self.script, str) else self.script(request)
        return ChatResponse(
            text=text, model=self.name, prompt_tokens=10, completion_tokens=5, latency_ms=self.delay_s * 1000
        )

    async def aclose(self) -> None:
        return None


class StreamingScriptedChatModel(ScriptedChatModel):
    """TEST DOUBLE: a :class:`ScriptedChatModel` that also streams its answer, word by word."""

    name = "scripted-streaming"

    def __init__(self, script: Script | str, *, step_s: float = 0.05) -> None:
        super().__init__(script)
        self.step_s = step_s
        self.streamed = 0

    async def stream(self, request: ChatRequest) -> AsyncIterator[str]:
        self.requests.append(request)
        self.streamed += 1
        text = self.script if isinstance(self.script, str) else self.script(request)
        words = text.split(" ")
        for i, word in enumerate(words):
            await asyncio.sleep(self.step_s)
            yield word if i == 0 else " " + word


class EchoChatModel:
    """TEST DOUBLE: echoes the last user message; usage = word counts; raises ``fail_with`` if given."""

    name = "fake-echo"

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.requests: list[ChatRequest] = []
        self.fail_with = fail_with

    async def chat(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        if self.fail_with is not None:
            raise self.fail_with
        last = request.messages[-1].content
        return ChatResponse(
            text=f"echo: {last}",
            model=self.name,
            prompt_tokens=sum(len(m.content.split()) for m in request.messages),
            completion_tokens=len(last.split()) + 1,
            latency_ms=1.0,
            finish_reason="stop",
        )

    async def aclose(self) -> None:
        return None
