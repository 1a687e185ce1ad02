"""Media in: what every channel's fetcher shares (a size-limited download, typed failures).

A channel turns the reference its webhook carried (a WhatsApp media id, a Telegram ``file_id``, an
Instagram attachment URL) into bytes with the connection's own credentials; each channel module holds its
fetcher (``fetch_media``). The download itself is here: streamed, and abandoned the moment it passes the
limit, so a 2 GB video never sits in memory and nothing half-downloaded is ever stored.

Failures are typed so the caller decides without knowing the provider:

* :class:`MediaTooLarge`: declared or counted over the limit (``details``: ``bytes``, ``max_bytes``);
* :class:`MediaFetchError` with ``retryable``: 429, 5xx, timeouts, connection errors (try again), or a
  refusal (4xx, an expired URL, a missing token: trying again cannot help).

Error messages never hold a URL: a Telegram file URL carries the bot token.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httpx
from pydantic import SecretStr

from common.config import ChannelSecrets
from common.domain import ChannelRoute, MediaRef
from common.errors import AssistantError, PayloadTooLarge


@dataclass(frozen=True)
class FetchedMedia:
    """The bytes of one media item and what the provider said about them."""

    data: bytes
    mime_type: str | None
    sha256: str

    @classmethod
    def of(cls, data: bytes, mime_type: str | None) -> FetchedMedia:
        """Bytes with their SHA-256 (shown to agents; identical files are recognisable)."""
        return cls(data=data, mime_type=mime_type, sha256=hashlib.sha256(data).hexdigest())


class MediaTooLarge(PayloadTooLarge):
    """The file is over ``MEDIA__MAX_BYTES``: nothing was stored."""


class MediaFetchError(AssistantError):
    """The provider did not hand the file over, and trying again cannot help (4xx, no token)."""

    status_code = 502
    code = "media_unavailable"


class RetryableMediaFetchError(MediaFetchError):
    """The provider did not hand the file over this time (429, 5xx, timeouts, connection errors)."""

    retryable: ClassVar[bool] = True


def fetch_error(message: str, *, retryable: bool) -> MediaFetchError:
    """The fetch error of the right kind."""
    return RetryableMediaFetchError(message) if retryable else MediaFetchError(message)


class MediaFetcher(Protocol):
    """One channel's way from a webhook's media reference to the bytes."""

    async def __call__(
        self,
        client: httpx.AsyncClient,
        *,
        secrets: ChannelSecrets,
        route: ChannelRoute,
        media: MediaRef,
        max_bytes: int,
    ) -> FetchedMedia:
        """The bytes of ``media``, fetched with ``route``'s credentials (else the ``CHANNELS__*``
        defaults, only for a connection without credentials of its own)."""
        ...


def credential(route: ChannelRoute, name: str, default: SecretStr | None) -> str:
    """The connection's own secret, else the deployment's default (only for a connection that has no
    credentials at all); a refusal when neither is there."""
    value = route.secret_or(name, default)
    if not value:
        raise fetch_error(f"no {name} to fetch media with", retryable=False)
    return value


def check_declared(size: Any, max_bytes: int) -> None:
    """Refuse before downloading when the provider already says the file is too big."""
    try:
        declared = int(size)
    except (TypeError, ValueError):
        return
    if declared > max_bytes:
        raise too_large(declared, max_bytes)


def too_large(size: int, max_bytes: int) -> MediaTooLarge:
    """The one error for a file over the limit, with both sizes for the agent."""
    return MediaTooLarge(
        f"the file is {_mb(size)}; the limit is {_mb(max_bytes)} (MEDIA__MAX_BYTES)",
        details={"bytes": size, "max_bytes": max_bytes},
    )


async def request_json(
    client: httpx.AsyncClient, method: str, url: str, *, what: str, **kwargs: Any
) -> tuple[httpx.Response, dict[str, Any]]:
    """A provider API call whose answer is JSON; transport failures are retryable fetch errors."""
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.TimeoutException:
        raise fetch_error(f"{what} timed out", retryable=True) from None
    except httpx.TransportError as exc:
        raise fetch_error(f"{what} unreachable ({type(exc).__name__})", retryable=True) from None
    try:
        data = response.json()
    except ValueError:
        data = {}
    return response, data if isinstance(data, dict) else {}


def refusal(status: int, what: str, detail: str = "") -> MediaFetchError:
    """A provider answer that is not the file: retryable for 429 and 5xx."""
    text = f"{what}: HTTP {status}" + (f" ({detail[:200]})" if detail else "")
    return fetch_error(text, retryable=status == 429 or status >= 500)


async def download(
    client: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    headers: dict[str, str] | None = None,
    what: str,
    mime_type: str | None = None,
) -> FetchedMedia:
    """GET ``url`` streamed, stopping at ``max_bytes`` + 1 (:class:`MediaTooLarge`)."""
    try:
        async with client.stream("GET", url, headers=headers or {}) as response:
            if not response.is_success:
                raise refusal(response.status_code, what)
            check_declared(response.headers.get("content-length"), max_bytes)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    # Counted, not trusted: a provider that declares nothing (or too little) is cut off here.
                    raise too_large(size, max_bytes)
                chunks.append(chunk)
            content_type = response.headers.get("content-type")
    except httpx.TimeoutException:
        raise fetch_error(f"{what} timed out", retryable=True) from None
    except httpx.TransportError as exc:
        raise fetch_error(f"{what} unreachable ({type(exc).__name__})", retryable=True) from None
    return FetchedMedia.of(b"".join(chunks), mime_type or _bare(content_type))


def _bare(content_type: str | None) -> str | None:
    if not content_type or content_type.startswith("application/json"):
        return None
    return content_type


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{size} bytes"
