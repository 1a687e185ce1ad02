"""The sender contract: one provider send API behind one small Protocol.

A :class:`Sender` delivers one :class:`common.schemas.OutboundPayload` from the brand's account
(:class:`RecipientConfig`, taken from its ``channel_configs`` row) to the customer. Long texts are split
into the channel's parts (:mod:`common.delivery.splitting`) and sent in order; ``start_part`` lets a retry
resume after the parts that already went out.

Failures are typed so the dispatcher can decide without knowing the provider::

    AssistantError
    └── SendError
        ├── RetryableSendError   429, 5xx, timeouts, connection errors (Retry-After in ``retry_after_s``)
        └── PermanentSendError   4xx other than 429, bad configuration: retrying cannot help

Both carry ``parts_sent`` (absolute index of the first part not delivered) and the provider ids of the
parts that were delivered before the failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from common.domain import Channel
from common.schemas import OutboundPayload


@dataclass(frozen=True)
class RecipientConfig:
    """The brand's account a reply is sent from (WhatsApp phone number id, Instagram account id, bot id)."""

    channel: Channel
    external_id: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    """What the provider accepted: the id of the first part and of every part, in order."""

    provider_message_id: str
    provider_message_ids: tuple[str, ...] = ()
    parts: int = 1


@runtime_checkable
class Sender(Protocol):
    """Sends replies on one channel."""

    @property
    def channel(self) -> Channel:
        """The channel this sender delivers."""
        ...

    @property
    def max_chars(self) -> int:
        """Longest part the provider accepts; longer replies are split."""
        ...

    async def send(
        self, payload: OutboundPayload, *, recipient_config: RecipientConfig, start_part: int = 0
    ) -> SendResult:
        """Deliver ``payload`` (parts from ``start_part`` on, in order); raise a :class:`SendError`."""
        ...
