"""Speech to text over an OpenAI-compatible ``/audio/transcriptions`` endpoint (OpenAI's Whisper API,
faster-whisper-server, vLLM's Whisper support, LocalAI...).

``POST {MEDIA__TRANSCRIPTION_URL}/audio/transcriptions`` as ``multipart/form-data`` with ``file``,
``model`` (and ``language`` when set), ``response_format=json``; the answer is ``{"text": ...}``. 429,
5xx, timeouts and connection errors are retried (:func:`common.retry.retry_async`); another 4xx is a
permanent :class:`TranscriptionError`. Nothing is transcribed without a configured endpoint: there is
no offline speech model here to fall back on.
"""

from __future__ import annotations

import httpx

from common.config import MediaSettings
from common.errors import DependencyError
from common.retry import RetryPolicy, retry_async

#: OpenAI's own upload limit for this endpoint.
MAX_AUDIO_BYTES = 25 * 1024 * 1024


class TranscriptionError(DependencyError):
    """The endpoint did not transcribe the audio and trying again cannot help (4xx, empty text)."""

    code = "transcription_failed"
    retryable = False


class RetryableTranscriptionError(TranscriptionError):
    """The endpoint was unreachable, slow or overloaded (429, 5xx): worth another try."""

    retryable = True


class Transcriber:
    """One configured transcription endpoint; :meth:`transcribe` audio bytes to text."""

    def __init__(
        self,
        settings: MediaSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        if not settings.transcription_url:
            raise ValueError("MEDIA__TRANSCRIPTION_URL is not set")
        headers = {"Accept": "application/json"}
        if settings.transcription_api_key is not None:
            headers["Authorization"] = f"Bearer {settings.transcription_api_key.get_secret_value()}"
        self._settings = settings
        self._policy = retry_policy or RetryPolicy(attempts=3)
        self._client = httpx.AsyncClient(
            base_url=settings.transcription_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(60.0),
            transport=transport,
        )

    async def transcribe(self, data: bytes, *, filename: str, mime_type: str | None) -> str:
        """The words spoken in ``data``; :class:`TranscriptionError` when none come back."""
        if len(data) > MAX_AUDIO_BYTES:
            raise TranscriptionError(f"audio over the endpoint's {MAX_AUDIO_BYTES // 2**20} MB limit")
        fields = {"model": self._settings.transcription_model, "response_format": "json"}
        if self._settings.transcription_language:
            fields["language"] = self._settings.transcription_language
        files = {"file": (filename, data, mime_type or "application/octet-stream")}

        async def call() -> str:
            try:
                response = await self._client.post("audio/transcriptions", data=fields, files=files)
            except httpx.TimeoutException:
                raise RetryableTranscriptionError("transcription endpoint timed out") from None
            except httpx.TransportError as exc:
                raise RetryableTranscriptionError(
                    f"transcription endpoint unreachable ({type(exc).__name__})"
                ) from None
            if response.status_code == 429 or response.status_code >= 500:
                raise RetryableTranscriptionError(
                    f"transcription endpoint answered HTTP {response.status_code}"
                )
            if not response.is_success:
                raise TranscriptionError(
                    f"transcription endpoint refused the audio: HTTP {response.status_code}",
                    details={"body": response.text[:300]},
                )
            try:
                text = response.json().get("text")
            except (ValueError, AttributeError):
                text = None
            if not isinstance(text, str) or not text.strip():
                raise TranscriptionError("the transcription is empty")
            return text.strip()

        return await retry_async(call, policy=self._policy)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
