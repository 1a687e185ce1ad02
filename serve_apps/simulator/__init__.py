"""Local provider SIMULATOR (Meta Graph send API, Telegram Bot API, signed webhooks) for tests and demos.

It is not a provider and proves nothing about Meta's or Telegram's production behaviour beyond the wire
format it copies; see docs/DELIVERY.md.
"""

from serve_apps.simulator.app import build_simulator_app
from serve_apps.simulator.server import SimulatorServer
from serve_apps.simulator.state import FaultSpec, SentMessage, SimulatorState
from serve_apps.simulator.webhooks import WebhookFirer, WebhookPaths, sign_meta

__all__ = [
    "FaultSpec",
    "SentMessage",
    "SimulatorServer",
    "SimulatorState",
    "WebhookFirer",
    "WebhookPaths",
    "build_simulator_app",
    "sign_meta",
]
