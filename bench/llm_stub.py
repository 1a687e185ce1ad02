"""A fixed-latency OpenAI-compatible LLM STUB for load tests (not a model).

It answers every chat completion after ``--latency-ms`` by quoting the first sentence of the first
``[1] (...)`` context block in the prompt, so replies pass the groundedness guardrail and the
platform's own cost (everything but generation) is what a load test measures.

    python -m bench.llm_stub --port 8901 --latency-ms 200
    LLM_PROVIDER=openai LLM_BASE_URL=http://127.0.0.1:8901/v1 make run
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time

import uvicorn
from fastapi import FastAPI

from common.llm.openai_app import build_openai_app
from common.schemas import ChatRequest, ChatResponse

_FIRST_BLOCK = re.compile(r"^\[1\] \([^)]*\) (?P<text>.+)$", re.MULTILINE)
_FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)")


class FixedLatencyQuoteModel:
    """STUB chat model: sleeps a fixed time, then quotes the first context sentence."""

    def __init__(self, *, latency_ms: float) -> None:
        self.name = "fixed-latency-stub"
        self.latency_s = latency_ms / 1000

    async def chat(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        await asyncio.sleep(self.latency_s)
        prompt = "\n".join(m.content for m in request.messages)
        block = _FIRST_BLOCK.search(prompt)
        text = "I don't know."
        if block:
            sentence = _FIRST_SENTENCE.match(block.group("text"))
            text = sentence.group(1) if sentence else block.group("text")
        return ChatResponse(
            text=text,
            model=self.name,
            prompt_tokens=len(prompt.split()),
            completion_tokens=len(text.split()),
            latency_ms=(time.perf_counter() - started) * 1000,
            finish_reason="stop",
        )

    async def aclose(self) -> None:
        """Nothing to release."""


def build_stub_app(*, latency_ms: float) -> FastAPI:
    """The stub behind the project's own OpenAI-compatible API."""
    return build_openai_app(FixedLatencyQuoteModel(latency_ms=latency_ms))


def main() -> None:
    """Serve the stub until interrupted."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8901)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    opts = parser.parse_args()
    uvicorn.run(
        build_stub_app(latency_ms=opts.latency_ms), host=opts.host, port=opts.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
