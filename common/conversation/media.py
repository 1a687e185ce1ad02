"""Media in, before drafting: fetch what the customer sent, store it, and say what there is to answer.

The webhook recorded the media ``pending`` with the message (:mod:`common.conversation.intake`); the
inbound worker's :meth:`MediaIntake.prepare` runs before the message is drafted:

1. **fetch** with the connection's own credentials (:data:`common.channels.registry.FETCHERS`), retrying
   429 / 5xx / timeouts, refusing anything over ``MEDIA__MAX_BYTES`` (declared or counted);
2. **scan** them with clamd when ``MEDIA__CLAMD_ADDRESS`` is set (:mod:`common.media_scan`; an infected
   file is refused, never stored);
3. **store** the bytes (:mod:`common.media_store`: Postgres, or an S3-compatible bucket) and ``stored``,
   or ``too_large`` / ``failed`` with the reason the agents see; nothing is ever half-stored, and a
   crash before the commit leaves it ``pending`` (the redelivered entry fetches it again);
4. **transcribe** a stored voice note or audio file when ``MEDIA__TRANSCRIPTION_URL`` is set: the
   transcript becomes the message's text (in the log too, so history and agents read it) and is answered
   like typed text.

What comes out (:class:`MediaOutcome`): the text to answer (a caption, a transcript), or none, with the
reason; the drafter then says the persona's ``media_message`` (or, for a file over the limit, that it is
too big) and hands the conversation to a person, who sees the media in the console.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common import metrics
from common.channels.media import FetchedMedia, MediaFetchError, MediaTooLarge
from common.channels.registry import FETCHERS
from common.config import Settings
from common.crypto import CredentialCipher
from common.db import repositories as repo
from common.domain import Channel, ChannelRoute, MediaRef
from common.errors import AssistantError
from common.llm.transcription import Transcriber, TranscriptionError
from common.logging import get_logger
from common.media_scan import build_scanner
from common.media_store import MediaStore, build_media_store
from common.observability import stage
from common.retry import RetryPolicy, retry_async

log = get_logger(__name__)


@dataclass(frozen=True)
class MediaOutcome:
    """What a media message leaves to answer: ``text`` (caption or transcript), or None and ``reason``.

    ``too_large``: the file was refused for its size (the customer is told so, not only handed over).
    """

    text: str | None
    reason: str = ""
    too_large: bool = False


class MediaIntake:
    """Fetches, stores and transcribes inbound media; one per orchestrator (its HTTP client pooled)."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        transport: httpx.AsyncBaseTransport | None = None,
        transcriber: Transcriber | None = None,
        store: MediaStore | None = None,
    ) -> None:
        """``transcriber``: defaults to one on ``MEDIA__TRANSCRIPTION_URL`` when that is set; ``store``
        to the one the settings name (Postgres, or ``MEDIA__S3_BUCKET``)."""
        self._settings = settings
        self._store = store or build_media_store(settings)
        self._scanner = build_scanner(settings.media)
        self._media = settings.media
        self._sessionmaker = sessionmaker
        self._cipher = CredentialCipher.from_settings(settings.secrets)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        if transcriber is None and settings.media.transcription_url:
            transcriber = Transcriber(settings.media, transport=transport)
        self._transcriber = transcriber
        self._policy = RetryPolicy(attempts=settings.media.fetch_attempts, base_delay_s=0.5, max_delay_s=5.0)

    @property
    def transcribes(self) -> bool:
        """Whether voice notes are transcribed here (``MEDIA__TRANSCRIPTION_URL``)."""
        return self._transcriber is not None

    async def prepare(self, inbound: Any, media: Any) -> MediaOutcome:
        """Fetch and store ``media`` (the row of the ``inbound`` message) if that is still to do, then
        what is left to answer. Idempotent: a stored file or a transcript is never fetched again."""
        with stage("media.prepare", kind=media.kind, channel=inbound.channel) as span:
            if media.status == "pending":
                await self._fetch_and_store(media)
                async with self._sessionmaker() as session:
                    media = await repo.get_media(session, media_id=media.id)
            span.set_attribute("status", media.status)
            outcome = await self._outcome(inbound, media)
            span.set_attribute("answerable", outcome.text is not None)
        return outcome

    async def _outcome(self, inbound: Any, media: Any) -> MediaOutcome:
        label = "voice note" if media.voice else media.kind
        if media.status == "too_large":
            return MediaOutcome(None, f"{label} not accepted: {media.error}", too_large=True)
        caption = (media.caption or "").strip()
        if caption:
            return MediaOutcome(caption)  # the words that came with it are the question
        if media.status == "failed":
            return MediaOutcome(None, f"{label} not stored: {media.error}")  # fetch failed, or refused
        if media.kind != "audio":
            return MediaOutcome(None, f"{label} received without text")
        if media.transcript:
            return MediaOutcome(media.transcript)
        if self._transcriber is None:
            return MediaOutcome(
                None, f"{label} not transcribed: no transcription endpoint (MEDIA__TRANSCRIPTION_URL)"
            )
        return await self._transcribe(inbound, media, label)

    async def _transcribe(self, inbound: Any, media: Any, label: str) -> MediaOutcome:
        assert self._transcriber is not None
        async with self._sessionmaker() as session:
            data = await self._store.get(session, media)
        if data is None:  # pragma: no cover - stored always has content (one transaction)
            return MediaOutcome(None, f"{label} has no stored content")
        filename = media.filename or f"{label.replace(' ', '-')}{_extension(media.mime_type)}"
        try:
            with stage("media.transcribe", bytes=len(data)):
                transcript = await self._transcriber.transcribe(
                    data, filename=filename, mime_type=media.mime_type
                )
        except TranscriptionError as exc:
            metrics.inc("ema_media_total", channel=inbound.channel, kind=media.kind, outcome="untranscribed")
            log.warning("media_transcription_failed", media_id=str(media.id), error=exc.message)
            async with self._sessionmaker() as session:
                await repo.finish_media(
                    session, media_id=media.id, error=f"transcription failed: {exc.message}"
                )
                await session.commit()
            return MediaOutcome(None, f"{label} could not be transcribed: {exc.message}")
        limit = self._settings.max_message_chars
        transcript = transcript[:limit]
        async with self._sessionmaker() as session:
            await repo.finish_media(session, media_id=media.id, transcript=transcript)
            # The log holds what was said, so history, follow-ups and agents read the words.
            await repo.set_message_text(session, message_id=inbound.id, text=transcript)
            await session.commit()
        metrics.inc("ema_media_total", channel=inbound.channel, kind=media.kind, outcome="transcribed")
        log.info("media_transcribed", media_id=str(media.id), chars=len(transcript))
        return MediaOutcome(transcript)

    async def _fetch_and_store(self, media: Any) -> None:
        """One fetch (with retries), then one transaction: bytes and ``stored``, or the reason."""
        channel = Channel(media.channel)
        ref = MediaRef(
            kind=media.kind,
            ref=media.provider_ref,
            mime_type=media.mime_type,
            filename=media.filename,
            voice=media.voice,
        )
        fetched: FetchedMedia | None = None
        status, error = "failed", ""
        try:
            route = await self._route(media.connection_id)
            fetcher = FETCHERS[channel]
            client = self._http()
            fetched = await retry_async(
                lambda: fetcher(
                    client,
                    secrets=self._settings.channels,
                    route=route,
                    media=ref,
                    max_bytes=self._media.max_bytes,
                ),
                policy=self._policy,
            )
        except MediaTooLarge as exc:
            status, error = "too_large", exc.message
        except (MediaFetchError, KeyError) as exc:
            error = exc.message if isinstance(exc, AssistantError) else f"no media fetcher for {channel}"
        if fetched is not None and self._scanner is not None:
            # Before anything is kept; clamd unreachable raises (retried later, the media still pending).
            with stage("media.scan", bytes=len(fetched.data)):
                verdict = await self._scanner.scan(fetched.data)
            if not verdict.clean:
                fetched, error = None, f"refused by the virus scan: {verdict.signature}"
                status = "failed"
        async with self._sessionmaker() as session:
            if fetched is not None:
                await self._store.put(
                    session, media, data=fetched.data, mime_type=fetched.mime_type, sha256=fetched.sha256
                )
            else:
                await repo.finish_media(session, media_id=media.id, status=status, error=error)
            await session.commit()
        outcome = "stored" if fetched is not None else status
        metrics.inc("ema_media_total", channel=channel.value, kind=media.kind, outcome=outcome)
        if fetched is not None:
            log.info("media_stored", media_id=str(media.id), kind=media.kind, bytes=len(fetched.data))
        else:
            log.warning(
                "media_not_stored", media_id=str(media.id), kind=media.kind, status=status, error=error
            )

    async def _route(self, connection_id: uuid.UUID | None) -> ChannelRoute:
        if connection_id is None:
            raise MediaFetchError("the channel connection it came through is gone")
        async with self._sessionmaker() as session:
            config = await repo.get_channel_config(session, connection_id=connection_id)
        if config is None:
            raise MediaFetchError("the channel connection it came through is gone")
        return repo.route_of(config, self._cipher)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            timeout = httpx.Timeout(self._media.fetch_timeout_s)
            self._client = httpx.AsyncClient(
                transport=self._transport, timeout=timeout, follow_redirects=True
            )
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP clients (the fetch client reopens if used again)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._transcriber is not None:
            await self._transcriber.aclose()


#: File name extensions for the audio types voice notes arrive in (transcription endpoints read them).
_EXTENSIONS = {
    "audio/ogg": ".ogg",
    "audio/mpeg": ".mp3",
    "audio/mp4": ".m4a",
    "audio/aac": ".aac",
    "audio/wav": ".wav",
}


def _extension(mime_type: str | None) -> str:
    base = (mime_type or "").split(";", 1)[0].strip().lower()
    return _EXTENSIONS.get(base, ".ogg")
