"""The project's own OpenAI-compatible endpoint over any :class:`ChatModel`.

``POST /v1/chat/completions`` (OpenAI request and response shapes, usage included) and ``GET /v1/models``.
It lets OpenAI clients (the official SDK, our :class:`OpenAICompatibleChatModel`) talk to the local model,
and serves as a local stand-in for a hosted provider in tests. ``stream: true`` is accepted and answered
as server-sent events carrying the whole completion in one delta: the backends here do not stream tokens.

Errors use one machine-readable body: the project's ``{"error": {"code", "message", "details"}}`` plus
the ``type`` and ``param`` fields OpenAI clients read. Invalid requests answer 400.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from common.errors import AssistantError
from common.llm.base import ChatModel
from common.schemas import ChatMessage, ChatRequest, ChatResponse

_OWNER = "enterprise-messaging-assistant"


class _TextPart(BaseModel):
    type: Literal["text"]
    text: str


class OpenAIMessageIn(BaseModel):
    """One message; content may be a string or a list of text parts. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_TextPart]

    def to_chat_message(self) -> ChatMessage:
        """Our schema: ``developer`` is OpenAI's newer name for ``system``."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        role: Literal["system", "user", "assistant"] = "system" if self.role == "developer" else self.role
        return ChatMessage(role=role, content=text)


class StreamOptions(BaseModel):
    """OpenAI ``stream_options``."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionIn(BaseModel):
    """``POST /v1/chat/completions`` body (the subset the backends honour; other fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[OpenAIMessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def to_chat_request(self) -> ChatRequest:
        """Our internal request."""
        return ChatRequest(
            messages=[m.to_chat_message() for m in self.messages],
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
        )


class UsageOut(BaseModel):
    """Token counts."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessageOut(BaseModel):
    """The completion's message."""

    role: Literal["assistant"] = "assistant"
    content: str


class ChoiceOut(BaseModel):
    """One choice (always exactly one)."""

    index: int = 0
    message: AssistantMessageOut
    finish_reason: str


class ChatCompletionOut(BaseModel):
    """OpenAI ``chat.completion`` object."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChoiceOut]
    usage: UsageOut


class ModelOut(BaseModel):
    """One entry of ``GET /v1/models``."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = _OWNER


class ModelListOut(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelOut]


def build_openai_app(model: ChatModel) -> FastAPI:
    """A FastAPI app serving ``model`` through the OpenAI chat completions API."""
    app = FastAPI(title="OpenAI-compatible chat", version="1")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        first = errors[0]["loc"] if errors else []
        body = _error_body(
            code="invalid_input",
            message="request body does not match the chat completions schema",
            param=".".join(str(p) for p in first[1:]) or None,
            details={"errors": errors},
        )
        return JSONResponse(status_code=400, content=body)

    @app.exception_handler(AssistantError)
    async def _failed(_: Request, exc: AssistantError) -> JSONResponse:
        body = _error_body(code=exc.code, message=exc.message, param=None, details=exc.details)
        return JSONResponse(status_code=exc.status_code, content=body)

    @app.get("/v1/models")
    async def list_models() -> ModelListOut:
        return ModelListOut(data=[ModelOut(id=model.name)])

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionIn) -> ChatCompletionOut | StreamingResponse:
        # Run the model before answering so its errors still map to a status code when streaming.
        response = await model.chat(body.to_chat_request())
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = _sse_events(
                response, model=model.name, completion_id=completion_id, created=created, usage=include_usage
            )
            return StreamingResponse(events, media_type="text/event-stream")
        return ChatCompletionOut(
            id=completion_id,
            created=created,
            model=model.name,
            choices=[
                ChoiceOut(
                    message=AssistantMessageOut(content=response.text),
                    finish_reason=response.finish_reason or "stop",
                )
            ],
            usage=_usage(response),
        )

    return app


def _usage(response: ChatResponse) -> UsageOut:
    return UsageOut(
        prompt_tokens=response.prompt_tokens,
        completion_tokens=response.completion_tokens,
        total_tokens=response.prompt_tokens + response.completion_tokens,
    )


def _error_body(*, code: str, message: str, param: str | None, details: dict[str, Any]) -> dict[str, Any]:
    error_type = "invalid_request_error" if code == "invalid_input" else code
    return {
        "error": {"code": code, "type": error_type, "message": message, "param": param, "details": details}
    }


async def _sse_events(
    response: ChatResponse, *, model: str, completion_id: str, created: int, usage: bool
) -> AsyncIterator[str]:
    base = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
    }

    def event(payload: dict[str, Any]) -> str:
        return f"data: {json.dumps({**base, **payload})}\n\n"

    yield event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": response.text}}]})
    yield event({"choices": [{"index": 0, "delta": {}, "finish_reason": response.finish_reason or "stop"}]})
    if usage:
        yield event({"choices": [], "usage": _usage(response).model_dump()})
    yield "data: [DONE]\n\n"
