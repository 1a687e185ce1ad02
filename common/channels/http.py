"""What every HTTP sender shares: split, send parts in order, classify provider answers.

Provider-specific code only builds one part's request and reads the provider id out of a success body;
turning transport errors and status codes into :class:`RetryableSendError` / :class:`PermanentSendError`
happens here. Error messages never contain the URL (the Telegram token is part of it).
"""

from __future__ import annotations

import email.utils
import time
from typing import Any, ClassVar

import httpx

from common.channels.base import RecipientConfig, SendResult
from common.channels.splitting import split_text
from common.config import ChannelSecrets
from common.domain import Channel
from common.errors import PermanentSendError, RetryableSendError, SendError
from common.logging import redact_http_client_logs
from common.schemas import OutboundAttachment, OutboundPayload

# Senders put the Telegram bot token in URLs, and httpx logs URLs: mask them wherever senders are used,
# configured logging or not (tests, scripts).
redact_http_client_logs()


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


class HttpSender:
    """Base of the provider senders; subclasses implement :meth:`_send_part`."""

    channel: ClassVar[Channel]
    max_chars: ClassVar[int]

    def __init__(self, *, client: httpx.AsyncClient, secrets: ChannelSecrets) -> None:
        self._client = client
        self._secrets = secrets

    async def send(
        self,
        payload: OutboundPayload,
        *,
        recipient_config: RecipientConfig,
        start_part: int = 0,
        file: bytes | None = None,
    ) -> SendResult:
        """Send every part from ``start_part`` on; the first part quotes the customer's message. With an
        ``attachment`` the reply is that one file (its bytes: ``file``) and its caption (one part)."""
        if payload.attachment is not None:
            if start_part >= 1:  # the file already went out
                return SendResult(provider_message_id="", provider_message_ids=(), parts=1)
            if file is None:
                raise PermanentSendError("the attached file's bytes were not given")
            sent = await self._send_attachment(payload, recipient_config, payload.attachment, file)
            return SendResult(provider_message_id=sent, provider_message_ids=(sent,), parts=1)
        parts = split_text(payload.text, limit=self.part_limit(recipient_config))
        if not parts:
            raise PermanentSendError("empty reply")
        if not 0 <= start_part < len(parts):
            raise PermanentSendError(f"start_part {start_part} out of range for {len(parts)} parts")
        ids: list[str] = []
        for index in range(start_part, len(parts)):
            try:
                ids.append(
                    await self._send_part(
                        payload, recipient_config, parts[index], index, last=index == len(parts) - 1
                    )
                )
            except SendError as exc:
                raise _with_progress(exc, parts_sent=index, ids=tuple(ids)) from exc
        return SendResult(provider_message_id=ids[0], provider_message_ids=tuple(ids), parts=len(parts))

    def part_limit(self, account: RecipientConfig) -> int:
        """Longest part for this send (a channel may send some kinds of message with a lower limit)."""
        return self.max_chars

    async def _send_part(
        self, payload: OutboundPayload, account: RecipientConfig, text: str, index: int, *, last: bool
    ) -> str:
        """Send part ``index`` (``last``: the final part, which carries any reply buttons)."""
        raise NotImplementedError

    async def _send_attachment(
        self, payload: OutboundPayload, account: RecipientConfig, file: OutboundAttachment, data: bytes
    ) -> str:
        """Send one file (``data``, as ``file`` describes it, with its caption); the provider's message id."""
        raise PermanentSendError(f"{self.channel} cannot send files")

    async def _post(
        self,
        url: str,
        *,
        json: dict[str, Any] | None = None,
        headers: dict[str, str],
        data: dict[str, str] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
    ) -> httpx.Response:
        """POST JSON (or a multipart form: ``data`` and ``files``); transport failures become
        :class:`RetryableSendError` (the provider may be fine later)."""
        try:
            if files is not None:
                return await self._client.post(url, data=data, files=files, headers=headers)
            return await self._client.post(url, json=json, headers=headers)
        except httpx.TimeoutException as exc:
            raise RetryableSendError(f"{self.channel} provider timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise RetryableSendError(f"{self.channel} provider unreachable ({type(exc).__name__})") from exc


def body_json(response: httpx.Response) -> dict[str, Any]:
    """The response body as a JSON object, ``{}`` when it is not one."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _with_progress(exc: SendError, *, parts_sent: int, ids: tuple[str, ...]) -> SendError:
    if isinstance(exc, RetryableSendError):
        return RetryableSendError(
            exc.message, retry_after_s=exc.retry_after_s, parts_sent=parts_sent, provider_message_ids=ids
        )
    if isinstance(exc, PermanentSendError):
        return PermanentSendError(exc.reason, parts_sent=parts_sent, provider_message_ids=ids)
    return SendError(exc.message, parts_sent=parts_sent, provider_message_ids=ids)
