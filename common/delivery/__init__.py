"""Outbound delivery: outbox relay, channel senders, and the exactly-once dispatcher (docs/DELIVERY.md)."""

from common.delivery.base import RecipientConfig, Sender, SendResult
from common.delivery.dispatcher import DEAD_LETTER_STREAM, OutboundDispatcher, Outcome
from common.delivery.registry import SenderRegistry, build_registry
from common.delivery.relay import OutboxRelay, RelayPass

__all__ = [
    "DEAD_LETTER_STREAM",
    "OutboundDispatcher",
    "OutboxRelay",
    "Outcome",
    "RecipientConfig",
    "RelayPass",
    "SendResult",
    "Sender",
    "SenderRegistry",
    "build_registry",
]
