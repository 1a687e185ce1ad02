"""The speech-to-text client against OpenAI's wire format (``httpx.MockTransport`` plays the endpoint)."""

from __future__ import annotations

import httpx
import pytest

from common.config import MediaSettings
from common.llm.transcription import MAX_AUDIO_BYTES, Transcriber, TranscriptionError
from common.retry import RetryPolicy

SETTINGS = MediaSettings(
    transcription_url="http://stt.test/v1", transcription_api_key="k-1", transcription_language="en"
)
FAST = RetryPolicy(attempts=3, base_delay_s=0.0, max_delay_s=0.0)


def _transcriber(handler) -> Transcriber:
    return Transcriber(SETTINGS, transport=httpx.MockTransport(handler), retry_policy=FAST)


async def test_sends_the_openai_multipart_request_and_reads_the_text() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"text": "  Do you ship to Canada?  "})

    stt = _transcriber(handler)
    assert (
        await stt.transcribe(b"OggS-audio", filename="voice.ogg", mime_type="audio/ogg")
        == "Do you ship to Canada?"
    )
    request = seen[0]
    assert request.method == "POST" and str(request.url) == "http://stt.test/v1/audio/transcriptions"
    assert request.headers["authorization"] == "Bearer k-1"
    body = request.read()
    for part in (
        b'name="model"',
        b"whisper-1",
        b'name="language"',
        b"en",
        b'filename="voice.ogg"',
        b"OggS-audio",
    ):
        assert part in body
    await stt.aclose()


async def test_overload_is_retried_and_a_refusal_is_not() -> None:
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(503) if calls["n"] < 3 else httpx.Response(200, json={"text": "hello"})

    assert await _transcriber(flaky).transcribe(b"a", filename="a.ogg", mime_type=None) == "hello"
    assert calls["n"] == 3

    refused = {"n": 0}

    def bad(request: httpx.Request) -> httpx.Response:
        refused["n"] += 1
        return httpx.Response(400, json={"error": {"message": "Invalid file format."}})

    with pytest.raises(TranscriptionError, match="HTTP 400") as info:
        await _transcriber(bad).transcribe(b"a", filename="a.ogg", mime_type=None)
    assert refused["n"] == 1 and "Invalid file format" in info.value.details["body"]


async def test_empty_text_and_oversized_audio_are_errors_not_answers() -> None:
    stt = _transcriber(lambda request: httpx.Response(200, json={"text": "   "}))
    with pytest.raises(TranscriptionError, match="empty"):
        await stt.transcribe(b"a", filename="a.ogg", mime_type=None)
    never = _transcriber(lambda request: pytest.fail("oversized audio must not be uploaded"))
    with pytest.raises(TranscriptionError, match="25 MB"):
        await never.transcribe(b"x" * (MAX_AUDIO_BYTES + 1), filename="a.ogg", mime_type=None)


def test_needs_an_endpoint() -> None:
    with pytest.raises(ValueError, match="MEDIA__TRANSCRIPTION_URL"):
        Transcriber(MediaSettings())
