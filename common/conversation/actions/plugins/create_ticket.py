"""``create_ticket``: open a helpdesk ticket for the customer, only after they confirm.

Helpdesk HTTP contract (``ACTIONS__HELPDESK_BASE_URL``, bearer ``ACTIONS__HELPDESK_API_KEY``)::

    POST /tickets  {"subject", "description", "customer_id", "channel", "brand_id", "conversation_id"}
                   header Idempotency-Key: <one per action and inbound message>
                   →  201/200 {"id": "T-..."}

The idempotency key lets the helpdesk drop a repeat if a retry or a second worker ever sends it again.
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from common.conversation.actions.base import ActionContext, ActionPlugin, ActionResult, PluginDeps
from common.errors import TicketBackendError
from common.logging import get_logger

log = get_logger(__name__)

NAME = "create_ticket"
#: Runs only once the customer confirms (the plugin\'s ``side_effect``).
SIDE_EFFECT = True


class TicketBackend(Protocol):
    """Where tickets are opened."""

    async def open_ticket(self, *, subject: str, description: str, context: ActionContext) -> str:
        """The new ticket's id; raises :class:`TicketBackendError` on failure."""
        ...


class HttpTicketBackend:
    """:class:`TicketBackend` over the helpdesk HTTP API."""

    def __init__(self, deps: PluginDeps, base_url: str) -> None:
        self._deps = deps
        self._base_url = base_url
        key = deps.settings.helpdesk_api_key
        self._api_key = key.get_secret_value() if key else None

    async def open_ticket(self, *, subject: str, description: str, context: ActionContext) -> str:
        """``POST /tickets`` with the verified customer identity and an idempotency key."""
        body = {
            "subject": subject,
            "description": description,
            "customer_id": context.customer_id,
            "channel": context.channel.value,
            "brand_id": str(context.brand_id),
            "conversation_id": str(context.conversation_id),
        }
        try:
            async with self._deps.client(self._base_url, self._api_key) as client:
                response = await client.post(
                    "/tickets", json=body, headers={"idempotency-key": context.idempotency_key}
                )
        except httpx.HTTPError as exc:
            raise TicketBackendError(f"helpdesk unreachable: {type(exc).__name__}") from exc
        if response.status_code not in (200, 201):
            raise TicketBackendError(f"helpdesk answered {response.status_code}")
        try:
            ticket_id = response.json()["id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise TicketBackendError("helpdesk answered without a ticket id") from exc
        return str(ticket_id)


class CreateTicket:
    """The ``create_ticket`` plugin."""

    name = NAME
    description = "Open a support ticket for the customer's problem so our team follows up."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "subject": {"type": "string", "minLength": 3, "maxLength": 120},
            "description": {"type": "string", "minLength": 3, "maxLength": 2000},
        },
        "required": ["subject", "description"],
        "additionalProperties": False,
    }
    side_effect = SIDE_EFFECT

    def __init__(self, backend: TicketBackend) -> None:
        self._backend = backend

    def confirmation(self, arguments: dict[str, Any]) -> str:
        """``Shall I open a ticket ...?``"""
        subject = " ".join(str(arguments.get("subject", "")).split())
        return f'Shall I open a ticket for our team about "{subject}"? Please reply yes or no.'

    def reply(self, result: ActionResult) -> str:
        """What the customer reads once the ticket exists (or could not be opened)."""
        if result.status == "succeeded":
            return f"Done: I opened ticket {result.data.get('ticket_id')}. Our team will follow up with you."
        return "Sorry, I could not open the ticket right now. Please try again a little later."

    async def run(self, arguments: dict[str, Any], context: ActionContext) -> ActionResult:
        """Open the ticket."""
        try:
            ticket_id = await self._backend.open_ticket(
                subject=str(arguments["subject"]), description=str(arguments["description"]), context=context
            )
        except TicketBackendError as exc:
            log.warning("create_ticket_failed", error=str(exc))
            return ActionResult(status="failed", summary="The helpdesk is not reachable right now.")
        return ActionResult(
            status="succeeded", summary=f"Ticket {ticket_id} opened.", data={"ticket_id": ticket_id}
        )


def build(deps: PluginDeps) -> ActionPlugin | None:
    """Enabled when ``ACTIONS__HELPDESK_BASE_URL`` is set."""
    base_url = deps.settings.helpdesk_base_url
    return CreateTicket(HttpTicketBackend(deps, base_url)) if base_url else None
