"""Outbound delivery: the outbox relay and the exactly-once dispatcher (docs/DELIVERY.md).

The senders they deliver through are the channels' (:mod:`common.channels`).
"""

from common.delivery.dispatcher import DEAD_LETTER_STREAM, OutboundDispatcher, Outcome
from common.outbox import OutboxRelay, RelayPass

__all__ = ["DEAD_LETTER_STREAM", "OutboundDispatcher", "OutboxRelay", "Outcome", "RelayPass"]
