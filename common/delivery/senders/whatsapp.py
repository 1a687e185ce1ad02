"""WhatsApp Cloud API sender: ``POST {graph}/{version}/{phone_number_id}/messages`` (text, contextual reply).

The phone number id is the brand's ``channel_configs.external_id``; the access token comes from settings
(``CHANNELS__META_ACCESS_TOKEN``). Success body: ``{"messaging_product", "contacts", "messages": [{"id"}]}``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from common.delivery.base import RecipientConfig
from common.delivery.senders.meta import GraphSender
from common.domain import Channel
from common.errors import PermanentSendError
from common.schemas import OutboundPayload

MAX_CHARS = 4096


class WhatsAppSender(GraphSender):
    """Text replies through the WhatsApp Cloud API; the first part quotes the customer's message."""

    channel: ClassVar[Channel] = Channel.WHATSAPP
    max_chars: ClassVar[int] = MAX_CHARS

    async def _send_part(
        self, payload: OutboundPayload, account: RecipientConfig, text: str, index: int
    ) -> str:
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": payload.customer_id,
            "type": "text",
            "text": {"body": text, "preview_url": False},
        }
        if index == 0 and payload.in_reply_to:
            body["context"] = {"message_id": payload.in_reply_to}
        answer = await self._post_message(account, body)
        messages = answer.get("messages")
        if (
            isinstance(messages, list)
            and messages
            and isinstance(messages[0], dict)
            and messages[0].get("id")
        ):
            return str(messages[0]["id"])
        raise PermanentSendError("whatsapp accepted the request but returned no message id")
