"""What an action plugin is: a name, a JSON Schema for its arguments, and ``run`` with a verified context.

The LLM only ever supplies ``arguments``; who the customer is comes from :class:`ActionContext`, built
by the orchestrator from the conversation (the channel-verified identity), never from the model's output
or the message text. A plugin that reads customer data must check ownership against
``context.customer_id`` itself and answer "not found" for someone else's record (no oracle).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict, Field

from common.config import ActionSettings
from common.domain import Channel
from common.schemas import RetrievedChunk

RetrieveFn = Callable[[uuid.UUID, uuid.UUID, str, int], Awaitable[list[RetrievedChunk]]]


class ActionContext(BaseModel):
    """Who is asking, established by the system (never by the model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant_id: uuid.UUID
    brand_id: uuid.UUID
    conversation_id: uuid.UUID
    channel: Channel
    customer_id: str = Field(description="The conversation's channel-verified customer identity")
    question: str = Field(default="", description="The customer's current message")
    idempotency_key: str = Field(description="Stable per action and inbound message; sent to backends")


class ActionResult(BaseModel):
    """What a plugin did. ``summary`` is what the LLM (and the audit log) sees."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["succeeded", "failed", "denied"]
    summary: str
    data: dict[str, Any] = Field(default_factory=dict)


@runtime_checkable
class ActionPlugin(Protocol):
    """One action. ``side_effect`` actions run only after the customer confirms."""

    name: str
    description: str
    parameters: dict[str, Any]
    side_effect: bool

    def confirmation(self, arguments: dict[str, Any]) -> str:
        """The question put to the customer before a side-effecting action runs."""
        ...

    def reply(self, result: ActionResult) -> str:
        """The customer-facing text once a confirmed action ran (no LLM involved)."""
        ...

    async def run(self, arguments: dict[str, Any], context: ActionContext) -> ActionResult:
        """Do it. ``arguments`` already passed the JSON Schema."""
        ...


@dataclass(frozen=True)
class PluginDeps:
    """What plugin factories may use: settings, brand-filtered retrieval, an injectable HTTP transport."""

    settings: ActionSettings
    retrieve: RetrieveFn | None = None
    min_score: float = 0.25
    transport: httpx.AsyncBaseTransport | None = None

    def client(self, base_url: str, api_key: str | None) -> httpx.AsyncClient:
        """An HTTP client for one backend call (timeout and auth from settings)."""
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=self.settings.http_timeout_s,
            transport=self.transport,
        )
