"""The human agents' API and console: conversations waiting for a person, their full context, agent
replies (delivered through the same outbox → ``outbound`` stream path, ``sender="agent"``), take over
and release back to the bot.

Authentication: ``Authorization: Bearer <AGENTS__API_TOKEN>`` on every ``/v1/agents`` call, compared with
``hmac.compare_digest``. With no token configured the API refuses every call (401). ``X-Agent-Id`` names
the agent for the audit trail (self-declared: one shared token cannot tell agents apart; per-agent
credentials come from the operator's SSO in front of this API). The console page (``GET /agent``) is
static and holds no data; it asks for the token and calls the API from the browser.
"""

from __future__ import annotations

import hmac
import re
import uuid
from datetime import datetime
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from common.conversation.agents import AGENT_RULE
from common.db import repositories as repo
from common.domain import Channel, ConversationState, Direction, OutboundResponse
from common.errors import NotFound, Unauthorized
from common.logging import get_logger
from common.schemas import CitationOut, GuardrailOut
from serve_apps.gateway.backend import GatewayBackend
from serve_apps.gateway.views import conversation_fields, message_fields

log = get_logger(__name__)

_AGENT_ID = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
DEFAULT_AGENT_ID = "agent"


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConversationSummaryOut(_Out):
    """One conversation in an agent's queue."""

    id: uuid.UUID
    brand_id: uuid.UUID
    channel: Channel
    customer_id: str
    state: ConversationState
    updated_at: datetime
    last_message: str
    escalation: GuardrailOut | None


class AgentMessageOut(_Out):
    """One message with what it relied on and who sent it."""

    id: uuid.UUID
    direction: Direction
    sender: Literal["customer", "bot", "agent"]
    text: str
    created_at: datetime
    citations: list[CitationOut]
    guardrails: list[GuardrailOut]


class ActionOut(_Out):
    """One action the model proposed and its outcome."""

    id: uuid.UUID
    name: str
    status: str
    reason: str
    arguments: dict[str, Any]
    result: dict[str, Any] | None
    created_at: datetime


class AgentConversationOut(_Out):
    """A conversation with its full context."""

    id: uuid.UUID
    brand_id: uuid.UUID
    channel: Channel
    customer_id: str
    state: ConversationState
    messages: list[AgentMessageOut]
    actions: list[ActionOut]


class AgentReplyIn(BaseModel):
    """``POST /v1/agents/conversations/{id}/messages``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1, max_length=4000)


class AgentReplyOut(_Out):
    """The stored agent message (queued for delivery)."""

    conversation_id: uuid.UUID
    message_id: uuid.UUID
    text: str


class StateOut(_Out):
    """A conversation's state after a take-over or release."""

    conversation_id: uuid.UUID
    state: ConversationState


def build_agents_router(backend: GatewayBackend) -> APIRouter:
    """Routes ``/v1/agents/...`` (bearer token) and the console page ``/agent``."""
    router = APIRouter()

    def agent(request: Request) -> str:
        return authenticate(request, backend)

    require_agent = Depends(agent)

    @router.get("/agent", response_class=HTMLResponse, include_in_schema=False)
    async def console() -> HTMLResponse:
        page = resources.files("serve_apps").joinpath("agent_console.html").read_text(encoding="utf-8")
        return HTMLResponse(page)

    @router.get("/v1/agents/brands/{brand_id}/conversations", response_model=list[ConversationSummaryOut])
    async def queue(
        brand_id: uuid.UUID,
        _agent: str = require_agent,
        state: ConversationState = ConversationState.HANDOFF,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> list[ConversationSummaryOut]:
        async with backend.sessionmaker() as session:
            await repo.require_brand(session, brand_id=brand_id)
            conversations = await repo.list_conversations(
                session, brand_id=brand_id, state=state, limit=limit
            )
            out = []
            for conv in conversations:
                recent = await repo.recent_messages(session, conversation_id=conv.id, limit=10)
                out.append(_summary(conv, recent))
        return out

    @router.get("/v1/agents/conversations/{conversation_id}", response_model=AgentConversationOut)
    async def conversation(conversation_id: uuid.UUID, _agent: str = require_agent) -> AgentConversationOut:
        async with backend.sessionmaker() as session:
            found = await repo.get_conversation_with_messages(session, conversation_id=conversation_id)
            if found is None:
                raise NotFound("unknown conversation", details={"conversation_id": str(conversation_id)})
            conv, messages = found
            actions = await repo.list_action_logs(session, conversation_id=conversation_id)
        return AgentConversationOut(
            **conversation_fields(conv),
            messages=[_message(m) for m in messages],
            actions=[
                ActionOut(
                    id=a.id,
                    name=a.name,
                    status=a.status,
                    reason=a.reason,
                    arguments=a.arguments or {},
                    result=a.result,
                    created_at=a.created_at,
                )
                for a in actions
            ],
        )

    @router.post(
        "/v1/agents/conversations/{conversation_id}/messages", response_model=AgentReplyOut, status_code=201
    )
    async def reply(
        conversation_id: uuid.UUID, body: AgentReplyIn, agent_id: str = require_agent
    ) -> AgentReplyOut:
        sent: OutboundResponse = await backend.orchestrator.agent_reply(conversation_id, body.text, agent_id)
        log.info("agent_replied", conversation_id=str(conversation_id), agent_id=agent_id)
        return AgentReplyOut(conversation_id=sent.conversation_id, message_id=sent.message_id, text=sent.text)

    @router.post("/v1/agents/conversations/{conversation_id}/release", response_model=StateOut)
    async def release(conversation_id: uuid.UUID, agent_id: str = require_agent) -> StateOut:
        state: ConversationState = await backend.orchestrator.release(conversation_id, agent_id)
        return StateOut(conversation_id=conversation_id, state=state)

    @router.post("/v1/agents/conversations/{conversation_id}/takeover", response_model=StateOut)
    async def takeover(conversation_id: uuid.UUID, agent_id: str = require_agent) -> StateOut:
        state: ConversationState = await backend.orchestrator.take_over(conversation_id, agent_id)
        return StateOut(conversation_id=conversation_id, state=state)

    return router


def authenticate(request: Request, backend: GatewayBackend) -> str:
    """The agent id of a request carrying the configured bearer token; raises Unauthorized otherwise."""
    configured = backend.settings.agents.api_token
    if configured is None:
        raise Unauthorized("the agent API is disabled: set AGENTS__API_TOKEN")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    expected = configured.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise Unauthorized("missing or wrong agent token")
    agent_id = request.headers.get("x-agent-id", DEFAULT_AGENT_ID)
    if not _AGENT_ID.fullmatch(agent_id):
        raise Unauthorized("X-Agent-Id must be 1-64 characters of letters, digits, . _ @ -")
    return agent_id


def _sender(row: Any) -> Literal["customer", "bot", "agent"]:
    if row.direction == Direction.INBOUND:
        return "customer"
    return "agent" if any(g.get("rule") == AGENT_RULE for g in (row.guardrails or [])) else "bot"


def _message(row: Any) -> AgentMessageOut:
    return AgentMessageOut(**message_fields(row), sender=_sender(row))


def _summary(conv: Any, recent: list[Any]) -> ConversationSummaryOut:
    last_inbound = next((m.text for m in reversed(recent) if m.direction == Direction.INBOUND), "")
    escalation = None
    for row in reversed(recent):
        found = [g for g in (row.guardrails or []) if g.get("action") == "escalate"]
        if found:
            escalation = GuardrailOut(**found[-1])
            break
    return ConversationSummaryOut(
        **conversation_fields(conv),
        updated_at=conv.updated_at,
        last_message=last_inbound,
        escalation=escalation,
    )
