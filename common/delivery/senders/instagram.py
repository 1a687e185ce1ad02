"""Instagram messaging sender: ``POST {graph}/{version}/{ig_id}/messages`` with ``{recipient, message}``.

The Instagram professional account id is the brand's ``channel_configs.external_id``; the customer id is
the Instagram-scoped id (IGSID) the webhook delivered. Success body: ``{"recipient_id", "message_id"}``.
Instagram text messages are limited to 1000 characters.
"""

from __future__ import annotations

from typing import ClassVar

from common.delivery.base import RecipientConfig
from common.delivery.senders.meta import GraphSender
from common.domain import Channel
from common.errors import PermanentSendError
from common.schemas import OutboundPayload

MAX_CHARS = 1000


class InstagramSender(GraphSender):
    """Text replies through the Instagram messaging API (Graph)."""

    channel: ClassVar[Channel] = Channel.INSTAGRAM
    max_chars: ClassVar[int] = MAX_CHARS

    async def _send_part(
        self, payload: OutboundPayload, account: RecipientConfig, text: str, index: int
    ) -> str:
        body = {"recipient": {"id": payload.customer_id}, "message": {"text": text}}
        answer = await self._post_message(account, body)
        message_id = answer.get("message_id")
        if not message_id:
            raise PermanentSendError("instagram accepted the request but returned no message_id")
        return str(message_id)
