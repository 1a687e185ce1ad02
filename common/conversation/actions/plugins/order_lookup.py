"""``order_lookup``: status of one of *this customer's* orders, from the commerce backend.

Authorization: the order's ``customer_id`` must equal the conversation's verified customer identity
(:class:`common.conversation.actions.base.ActionContext`). Someone else's order and a missing order get
the same
answer, so the action cannot be used to probe which order numbers exist.

Commerce HTTP contract (``ACTIONS__COMMERCE_BASE_URL``, bearer ``ACTIONS__COMMERCE_API_KEY``)::

    GET /orders/{order_id}  →  200 {"id", "customer_id", "status", "items": [{"name", "quantity"}],
                                    "total", "currency", "tracking_url"?}  |  404
"""

from __future__ import annotations

import hmac
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from common.conversation.actions.base import ActionContext, ActionPlugin, ActionResult, PluginDeps
from common.errors import OrderBackendError
from common.logging import get_logger

log = get_logger(__name__)

NAME = "order_lookup"
#: Runs only once the customer confirms (the plugin\'s ``side_effect``).
SIDE_EFFECT = False


class OrderItem(BaseModel):
    """One order line."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    quantity: int = 1


class Order(BaseModel):
    """The fields of an order this action uses."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    customer_id: str
    status: str
    items: list[OrderItem] = []
    total: str | float | None = None
    currency: str = ""
    tracking_url: str | None = None


class OrderBackend(Protocol):
    """Where orders come from."""

    async def get_order(self, order_id: str) -> Order | None:
        """The order, or None when it does not exist."""
        ...


class HttpOrderBackend:
    """:class:`OrderBackend` over the commerce HTTP API."""

    def __init__(self, deps: PluginDeps, base_url: str) -> None:
        self._deps = deps
        self._base_url = base_url
        key = deps.settings.commerce_api_key
        self._api_key = key.get_secret_value() if key else None

    async def get_order(self, order_id: str) -> Order | None:
        """``GET /orders/{id}``; 404 → None."""
        try:
            async with self._deps.client(self._base_url, self._api_key) as client:
                response = await client.get(f"/orders/{order_id}")
        except httpx.HTTPError as exc:
            raise OrderBackendError(f"commerce backend unreachable: {type(exc).__name__}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise OrderBackendError(f"commerce backend answered {response.status_code}")
        try:
            return Order.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise OrderBackendError("commerce backend answered an unreadable order") from exc


class OrderLookup:
    """The ``order_lookup`` plugin."""

    name = NAME
    description = "Look up the status of one of the customer's own orders by its order number."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"order_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9-]{0,39}$"}},
        "required": ["order_id"],
        "additionalProperties": False,
    }
    side_effect = SIDE_EFFECT

    def __init__(self, backend: OrderBackend) -> None:
        self._backend = backend

    def confirmation(self, arguments: dict[str, Any]) -> str:
        """Read-only: never asked."""
        return ""

    def reply(self, result: ActionResult) -> str:
        """Read-only results are phrased by the LLM from ``summary``."""
        return result.summary

    async def run(self, arguments: dict[str, Any], context: ActionContext) -> ActionResult:
        """Fetch the order and check that it belongs to the verified customer."""
        order_id = str(arguments["order_id"])
        not_found = ActionResult(status="denied", summary=f"No order {order_id} was found for this customer.")
        try:
            order = await self._backend.get_order(order_id)
        except OrderBackendError as exc:
            log.warning("order_lookup_failed", error=str(exc))
            return ActionResult(status="failed", summary="The order system is not reachable right now.")
        if order is None:
            return not_found
        if not hmac.compare_digest(order.customer_id.encode(), context.customer_id.encode()):
            log.warning("order_lookup_denied", conversation_id=str(context.conversation_id))
            return not_found
        return ActionResult(status="succeeded", summary=_describe(order), data={"order_id": order.id})


def _describe(order: Order) -> str:
    items = ", ".join(f"{i.quantity} x {i.name}" for i in order.items) or "no items"
    parts = [f"Order {order.id} status: {order.status}.", f"Items: {items}."]
    if order.total is not None:
        parts.append(f"Total: {order.total} {order.currency}".rstrip() + ".")
    if order.tracking_url:
        parts.append(f"Tracking: {order.tracking_url}")
    return " ".join(parts)


def build(deps: PluginDeps) -> ActionPlugin | None:
    """Enabled when ``ACTIONS__COMMERCE_BASE_URL`` is set."""
    base_url = deps.settings.commerce_base_url
    return OrderLookup(HttpOrderBackend(deps, base_url)) if base_url else None
