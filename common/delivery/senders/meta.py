"""Meta Graph API errors, shared by the WhatsApp and Instagram senders.

Graph errors are ``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}``. Throttling
can come back as HTTP 400 with a rate-limit ``code``, so the code decides, not only the status.
"""

from __future__ import annotations

from typing import Any

import httpx

from common.delivery.base import RecipientConfig
from common.delivery.senders.http import HttpSender, body_json, parse_retry_after
from common.errors import PermanentSendError, RetryableSendError, SendError

#: Graph error codes meaning "slow down" (app, account, pair and spam-rate limits).
THROTTLE_CODES = frozenset({4, 17, 32, 613, 80007, 130429, 131048, 131056})


def graph_error(response: httpx.Response, *, channel: str) -> SendError:
    """Classify a non-2xx Graph response."""
    error = body_json(response).get("error")
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    text = f"{channel} Graph API {response.status_code}" + (f" code {code}: {message}" if code else "")
    if response.status_code == 429 or response.status_code >= 500 or code in THROTTLE_CODES:
        return RetryableSendError(text, retry_after_s=parse_retry_after(response.headers.get("retry-after")))
    return PermanentSendError(text)


class GraphSender(HttpSender):
    """Shared by the WhatsApp and Instagram senders: ``POST {graph}/{version}/{account}/messages``."""

    async def _post_message(self, account: RecipientConfig, body: dict[str, Any]) -> dict[str, Any]:
        """Send one message body from ``account``; the provider's JSON answer, or a classified error."""
        token = self._secrets.meta_access_token
        if token is None:
            raise PermanentSendError("CHANNELS__META_ACCESS_TOKEN is not configured")
        graph = self._secrets.meta_graph_url.rstrip("/")
        url = f"{graph}/{self._secrets.meta_graph_version}/{account.external_id}/messages"
        response = await self._post(
            url, json=body, headers={"Authorization": f"Bearer {token.get_secret_value()}"}
        )
        if not response.is_success:
            raise graph_error(response, channel=str(self.channel))
        return body_json(response)
