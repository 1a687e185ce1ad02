"""A fixed-latency OpenAI-compatible LLM STUB for load tests (not a model).

It answers every chat completion after ``--latency-ms`` by quoting the first sentence of the first
``[1] (...)`` context block in the prompt, so replies pass the groundedness guardrail and the
platform's own cost (everything but generation) is what a load test measures.

    python -m bench.llm_stub --port 8901 --latency-ms 200
    LLM_PROVIDER=openai LLM_BASE_URL=http://127.0.0.1:8901/v1 make run

Fault modes for the chaos tests (tests/chaos/): ``--latency-ms`` past ``LLM__TIMEOUT_S`` is a model that
hangs; ``--fail-status 500`` answers every completion with that status (an overloaded or broken model).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.middleware.base import RequestResponseEndpoint

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


def build_stub_app(*, latency_ms: float, fail_status: int | None = None) -> FastAPI:
    """The stub behind the project's own OpenAI-compatible API; ``fail_status`` fails every completion."""
    app = build_openai_app(FixedLatencyQuoteModel(latency_ms=latency_ms))
    if fail_status is not None:

        @app.middleware("http")
        async def fail(request: Request, call_next: RequestResponseEndpoint) -> Response:
            if request.url.path.endswith("/chat/completions"):
                body = {"error": {"message": "stub fault", "type": "server_error", "code": fail_status}}
                return JSONResponse(status_code=fail_status, content=body)
            return await call_next(request)

    return app


class StubServer:
    """The stub on a free local port, served from a thread; a context manager (tests, benchmarks)."""

    def __init__(self, *, latency_ms: float, fail_status: int | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        app = build_stub_app(latency_ms=latency_ms, fail_status=fail_status)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL (what ``LLM_BASE_URL`` takes)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, *, timeout_s: float = 20.0) -> StubServer:
        """Start serving; returns once the socket accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self._server.started:
            raise RuntimeError("LLM stub did not start")
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main() -> None:
    """Serve the stub until interrupted."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8901)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--fail-status", type=int, default=None, help="answer every completion with this")
    opts = parser.parse_args()
    app = build_stub_app(latency_ms=opts.latency_ms, fail_status=opts.fail_status)
    uvicorn.run(app, host=opts.host, port=opts.port, log_level="warning")


if __name__ == "__main__":
    main()
