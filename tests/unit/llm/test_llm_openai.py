"""The OpenAI wire format end to end: our client ↔ our openai_app, retries, and the official SDK.

``FakeChatModel`` is a test double for the wire format only: it answers deterministically so the tests
can check what crosses HTTP, not what a model says.
"""

import json

import httpx
import openai
import pytest

from common.config import LLMProvider, LLMSettings
from common.errors import InvalidInput, LLMError, LLMPermanentError
from common.llm import build_chat_model
from common.llm.openai_app import build_openai_app
from common.llm.openai_compat import OpenAICompatibleChatModel, parse_retry_after
from common.retry import RetryPolicy
from common.schemas import ChatMessage, ChatRequest
from tests.fakes.chat import EchoChatModel

BASE_URL = "http://testserver/v1"


class SleepRecorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def settings(**overrides) -> LLMSettings:
    values = {"provider": LLMProvider.OPENAI, "base_url": BASE_URL, "model": "fake-echo", "max_retries": 2}
    values.update(overrides)
    return LLMSettings(**values)


REQUEST = ChatRequest(
    messages=[
        ChatMessage(role="system", content="be brief"),
        ChatMessage(role="user", content="hello there"),
    ],
    max_tokens=20,
)


def completion_body(text: str = "ok") -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "remote",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    }


def client_for(handler, sleep=None, **overrides) -> tuple[OpenAICompatibleChatModel, SleepRecorder]:
    recorder = sleep or SleepRecorder()
    model = OpenAICompatibleChatModel(
        settings(**overrides),
        transport=httpx.MockTransport(handler),
        retry_policy=RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=5.0),
        sleep=recorder,
    )
    return model, recorder


# --- our client against our app ------------------------------------------------------------------


async def test_client_round_trip_through_openai_app():
    fake = EchoChatModel()
    model = OpenAICompatibleChatModel(settings(), transport=httpx.ASGITransport(app=build_openai_app(fake)))
    try:
        response = await model.chat(REQUEST)
    finally:
        await model.aclose()
    assert response.text == "echo: hello there"
    assert response.model == "fake-echo"
    assert (response.prompt_tokens, response.completion_tokens) == (4, 3)
    assert response.finish_reason == "stop"
    assert response.latency_ms > 0
    assert fake.requests[0].messages == REQUEST.messages
    assert fake.requests[0].max_tokens == 20
    assert model.usage.requests == 1 and model.usage.completion_tokens == 3


async def test_client_stream_through_openai_app():
    model = OpenAICompatibleChatModel(
        settings(), transport=httpx.ASGITransport(app=build_openai_app(EchoChatModel()))
    )
    try:
        parts = [part async for part in model.stream(REQUEST)]
    finally:
        await model.aclose()
    assert "".join(parts) == "echo: hello there"


async def test_app_lists_models_and_rejects_invalid_bodies():
    app = build_openai_app(EchoChatModel())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        models = (await http.get("/v1/models")).json()
        bad = await http.post("/v1/chat/completions", json={"messages": []})
        bad_role = await http.post(
            "/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "x"}]}
        )
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["fake-echo"]
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_input"
    assert bad.json()["error"]["param"] == "messages"
    assert bad_role.status_code == 400
    assert bad_role.json()["error"]["details"]["errors"]


async def test_app_maps_model_errors_and_client_retries_them():
    fake = EchoChatModel(fail_with=LLMError("model down"))
    recorder = SleepRecorder()
    model = OpenAICompatibleChatModel(
        settings(),
        transport=httpx.ASGITransport(app=build_openai_app(fake)),
        retry_policy=RetryPolicy(attempts=3, base_delay_s=0.01),
        sleep=recorder,
    )
    with pytest.raises(LLMError) as info:
        await model.chat(REQUEST)
    await model.aclose()
    assert info.value.details["status"] == 503
    assert len(fake.requests) == 3
    assert len(recorder.delays) == 2


# --- retries against httpx.MockTransport -----------------------------------------------------------


async def test_429_with_retry_after_then_200():
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "2"}, json={"error": {"message": "slow down"}})
        return httpx.Response(200, json=completion_body("fine"))

    model, recorder = client_for(handler, api_key="sk-test")
    response = await model.chat(REQUEST)
    await model.aclose()
    assert response.text == "fine"
    assert (response.prompt_tokens, response.completion_tokens) == (7, 2)
    assert recorder.delays == [2.0]
    assert len(calls) == 2
    assert str(calls[0].url) == "http://testserver/v1/chat/completions"
    assert calls[0].headers["authorization"] == "Bearer sk-test"
    sent = json.loads(calls[0].content)
    assert sent["model"] == "fake-echo" and sent["max_tokens"] == 20 and sent["stream"] is False


async def test_500_every_time_gives_llm_error_after_bounded_attempts():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500, text="boom")

    model, recorder = client_for(handler)
    with pytest.raises(LLMError) as info:
        await model.chat(REQUEST)
    await model.aclose()
    assert not isinstance(info.value, LLMPermanentError)
    assert info.value.details["status"] == 500
    assert len(calls) == 3
    assert len(recorder.delays) == 2
    assert all(0 <= d <= 5.0 for d in recorder.delays)


async def test_network_errors_are_retried():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json=completion_body())

    model, _ = client_for(handler)
    assert (await model.chat(REQUEST)).text == "ok"
    await model.aclose()
    assert len(calls) == 3


async def test_400_is_permanent_and_not_retried():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, json={"error": {"message": "bad model"}})

    model, recorder = client_for(handler)
    with pytest.raises(LLMPermanentError) as info:
        await model.chat(REQUEST)
    await model.aclose()
    assert info.value.details["status"] == 400
    assert "bad model" in info.value.details["body"]
    assert len(calls) == 1
    assert recorder.delays == []


async def test_no_authorization_header_without_key():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=completion_body())

    model, _ = client_for(handler)
    await model.chat(REQUEST)
    await model.aclose()
    assert "authorization" not in seen[0].headers


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: go now


# --- factory ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", [LLMProvider.OPENAI, LLMProvider.VLLM])
def test_factory_requires_base_url_for_http_providers(provider):
    with pytest.raises(InvalidInput) as info:
        build_chat_model(LLMSettings(provider=provider))
    assert info.value.details["setting"] == "llm.base_url"


async def test_factory_builds_http_client_for_vllm():
    model = build_chat_model(LLMSettings(provider=LLMProvider.VLLM, base_url="http://vllm:8000/v1"))
    assert isinstance(model, OpenAICompatibleChatModel)
    await model.aclose()


# --- the official openai SDK against our app -------------------------------------------------------


async def test_official_openai_client_talks_to_openai_app():
    fake = EchoChatModel()
    transport = httpx.ASGITransport(app=build_openai_app(fake))
    async with httpx.AsyncClient(transport=transport) as http:
        client = openai.AsyncOpenAI(base_url=BASE_URL, api_key="unused", http_client=http, max_retries=0)
        completion = await client.chat.completions.create(
            model="fake-echo", messages=[{"role": "user", "content": "ping pong"}], max_tokens=8
        )
        models = await client.models.list()
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="fake-echo", messages=[], max_tokens=8)
    assert completion.choices[0].message.content == "echo: ping pong"
    assert completion.usage is not None and completion.usage.total_tokens == 2 + 3
    assert [m.id for m in models.data] == ["fake-echo"]
