"""Customer journeys the demo (``make simulate``) plays against a running gateway, at the provider
SIMULATOR; the integration tests play the same ones, so what the demo shows is what is tested.

* :func:`ticket_by_tap`: a WhatsApp customer asks for a ticket; the reply asks "Shall I open a ticket
  ...?" with Yes / No reply buttons; the customer taps "Yes" (an ``interactive`` ``button_reply``, no
  typing) and the ticket opens in the SIMULATED helpdesk.
* :func:`late_message`: a WhatsApp message whose webhook reaches the gateway a day after the customer
  sent it (Meta retries failed deliveries for days); the window closed at sending + 24 h, so the reply
  goes out as the connection's approved template, not as free-form text WhatsApp would refuse (131047).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from serve_apps.simulator.state import SentMessage, SimulatorState
from serve_apps.simulator.webhooks import (
    WebhookFirer,
    whatsapp_button_reply,
    whatsapp_message,
    whatsapp_update,
)


async def wait_reply(state: SimulatorState, message_id: str, *, timeout_s: float) -> SentMessage | None:
    """The first send quoting ``message_id`` (WhatsApp ``context``), waiting up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = state.replies_to(message_id)
        if found or time.monotonic() >= deadline:
            return found[0] if found else None
        await asyncio.sleep(0.2)


def reply_buttons(sent: SentMessage) -> list[dict[str, str]]:
    """The ``{id, title}`` of a WhatsApp interactive message's reply buttons (none for other sends)."""
    interactive = sent.body.get("interactive")
    action = interactive.get("action") if isinstance(interactive, dict) else None
    buttons = action.get("buttons") if isinstance(action, dict) else None
    found = []
    for button in buttons if isinstance(buttons, list) else []:
        reply = button.get("reply") if isinstance(button, dict) else None
        if isinstance(reply, dict):
            found.append({"id": str(reply.get("id", "")), "title": str(reply.get("title", ""))})
    return found


@dataclass
class TapJourney:
    """What :func:`ticket_by_tap` saw."""

    asked: SentMessage | None = None
    buttons: list[dict[str, str]] = field(default_factory=list)
    done: SentMessage | None = None
    ticket: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Asked with buttons, answered the tap, and the helpdesk has the ticket."""
        return bool(self.asked and self.buttons and self.done and self.ticket)


async def ticket_by_tap(
    firer: WebhookFirer,
    state: SimulatorState,
    *,
    phone_number_id: str,
    sender: str,
    text: str,
    timeout_s: float,
) -> TapJourney:
    """Ask for a ticket on WhatsApp, tap "Yes" on the reply's button, see the ticket open."""
    journey = TapJourney()
    opened_before = len(state.tickets())
    question = whatsapp_message(sender=sender, text=text)
    await firer.whatsapp(whatsapp_update(phone_number_id=phone_number_id, messages=[question]))
    journey.asked = await wait_reply(state, str(question["message"]["id"]), timeout_s=timeout_s)
    if journey.asked is None:
        return journey
    journey.buttons = reply_buttons(journey.asked)
    yes = next((b for b in journey.buttons if b["title"].lower() == "yes"), None)
    if yes is None:
        return journey
    tap = whatsapp_button_reply(
        sender=sender, button_id=yes["id"], title=yes["title"], replied_to=journey.asked.provider_message_id
    )
    await firer.whatsapp(whatsapp_update(phone_number_id=phone_number_id, messages=[tap]))
    journey.done = await wait_reply(state, str(tap["message"]["id"]), timeout_s=timeout_s)
    tickets = state.tickets()
    journey.ticket = tickets[-1] if len(tickets) > opened_before else None
    return journey


async def late_message(
    firer: WebhookFirer,
    state: SimulatorState,
    *,
    phone_number_id: str,
    sender: str,
    text: str,
    hours_late: float,
    timeout_s: float,
) -> SentMessage | None:
    """A WhatsApp message the customer sent ``hours_late`` ago, delivered now; the reply to it."""
    item = whatsapp_message(sender=sender, text=text)
    item["message"]["timestamp"] = str(int(time.time() - hours_late * 3600))
    await firer.whatsapp(whatsapp_update(phone_number_id=phone_number_id, messages=[item]))
    return await wait_reply(state, str(item["message"]["id"]), timeout_s=timeout_s)
