"""Telegram Bot API sender: ``POST {api}/bot{token}/sendMessage`` ``{chat_id, text, reply_parameters}``.

Every answer is ``{"ok": true, "result": Message}`` or ``{"ok": false, "error_code", "description",
"parameters": {"retry_after"}}``; ``ok`` decides, not only the HTTP status. The bot token comes from
settings (``CHANNELS__TELEGRAM_BOT_TOKEN``) and is part of the URL, so the URL is never logged or put in
an error. ``reply_parameters`` is sent only when ``in_reply_to`` is a numeric Telegram message id.
"""

from __future__ import annotations

from typing import Any, ClassVar

from common.delivery.base import RecipientConfig
from common.delivery.senders.http import HttpSender, body_json
from common.domain import Channel
from common.errors import PermanentSendError, RetryableSendError
from common.schemas import OutboundPayload

MAX_CHARS = 4096


def reply_to_message_id(in_reply_to: str | None) -> int | None:
    """Telegram's message id when ``in_reply_to`` is one (all digits), else None (the reply is not quoted).

    The webhook adapter keys inbound messages ``"{bot_id}:{update_id}"``: an update id is not a message id,
    so such a key is never mistaken for one.
    """
    if in_reply_to and in_reply_to.isdigit():
        return int(in_reply_to)
    return None


class TelegramSender(HttpSender):
    """Text replies through the Bot API; the first part replies to the customer's message."""

    channel: ClassVar[Channel] = Channel.TELEGRAM
    max_chars: ClassVar[int] = MAX_CHARS

    async def _send_part(
        self, payload: OutboundPayload, account: RecipientConfig, text: str, index: int
    ) -> str:
        token = self._secrets.telegram_bot_token
        if token is None:
            raise PermanentSendError("CHANNELS__TELEGRAM_BOT_TOKEN is not configured")
        body: dict[str, Any] = {"chat_id": payload.customer_id, "text": text}
        reply_id = reply_to_message_id(payload.in_reply_to)
        if index == 0 and reply_id is not None:
            # Still answer when the customer deleted the message we reply to.
            body["reply_parameters"] = {"message_id": reply_id, "allow_sending_without_reply": True}
        api = self._secrets.telegram_api_url.rstrip("/")
        response = await self._post(f"{api}/bot{token.get_secret_value()}/sendMessage", json=body, headers={})
        data = body_json(response)
        if response.is_success and data.get("ok") is True:
            result = data.get("result")
            if isinstance(result, dict) and "message_id" in result:
                return str(result["message_id"])
            raise PermanentSendError("telegram answered ok without a message_id")
        raise _telegram_error(response.status_code, data)


def _telegram_error(status: int, data: dict[str, Any]) -> RetryableSendError | PermanentSendError:
    code = data.get("error_code", status)
    code = code if isinstance(code, int) else status
    text = f"telegram {code}: {data.get('description', 'no description')}"
    if code == 429 or code >= 500:
        params = data.get("parameters")
        retry_after = params.get("retry_after") if isinstance(params, dict) else None
        seconds = float(retry_after) if isinstance(retry_after, int | float) else None
        return RetryableSendError(text, retry_after_s=seconds)
    return PermanentSendError(text)
