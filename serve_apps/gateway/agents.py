"""The human agents' API and console: conversations waiting for a person, their full context, agent
replies (delivered through the same outbox → ``outbound`` stream path, ``sender="agent"``), take over
and release back to the bot.

Authentication, on every ``/v1/agents`` call:

* a signed-in **agent account** (``Authorization: Bearer eas_...`` from ``POST /v1/agents/sessions``):
  the agent of every reply, take-over and release is that account (``agent:<email>`` in the audit log);
  an account limited to some brands sees only their queues and conversations (others → 404);
* or a tenant API key with the ``agents`` scope, for integrations (a helpdesk bridge): ``X-Agent-Id``
  names the person it acts for, recorded as declared by the key (``key:<prefix>/agent:<id>``).

Either sees only its own tenant (another tenant's brand or conversation → 404). The console page
(``GET /agent``) is static and holds no data: it signs the agent in and calls the API from the browser.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from common.access.agents import AgentAccounts, SessionOut, SignInIn
from common.access.management import Management
from common.access.principal import Principal, Scope
from common.conversation.agents import AGENT_RULE, AgentFile
from common.db import repositories as repo
from common.domain import Channel, ConversationState, Direction, OutboundResponse
from common.errors import InvalidInput, NotFound, PayloadTooLarge, UnsupportedMediaType
from common.logging import get_logger
from common.media_store import build_media_store
from common.schemas import CitationOut, DeliveryOut, GuardrailOut, MediaOut
from serve_apps.gateway.agent_events import queue_events
from serve_apps.gateway.auth import PUBLIC, authenticator, requires
from serve_apps.gateway.backend import GatewayBackend
from serve_apps.gateway.views import (
    conversation_fields,
    delivery_out,
    media_download,
    media_out,
    message_fields,
)

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
    delivery: DeliveryOut | None = None
    media: MediaOut | None = None


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


class AgentMeOut(_Out):
    """Who the console is signed in as."""

    agent: str
    signed_in: bool = Field(description="An agent account's session (false: an API key naming an agent)")
    brand_ids: list[uuid.UUID] | None


class StateOut(_Out):
    """A conversation's state after a take-over or release."""

    conversation_id: uuid.UUID
    state: ConversationState


@dataclass(frozen=True, slots=True)
class AgentCaller:
    """The key behind an agent API call and the person it names (``X-Agent-Id``)."""

    principal: Principal
    agent_id: str

    @property
    def actor(self) -> Principal:
        """The audit log's actor: the signed-in account, or the key's prefix and the agent it names."""
        if self.principal.agent_id is not None:
            return self.principal
        return replace(self.principal, actor=f"{self.principal.actor}/agent:{self.agent_id}")


def build_agents_router(backend: GatewayBackend) -> APIRouter:
    """Routes ``/v1/agents/...`` (tenant key with the ``agents`` scope) and the console page ``/agent``."""
    router = APIRouter()
    media_store = build_media_store(backend.settings)  # one client for every download

    def agent(request: Request, principal: Principal = requires(Scope.AGENTS)) -> AgentCaller:
        if principal.agent_id is not None:  # signed in: the account is the agent, whatever a header says
            return AgentCaller(principal=principal, agent_id=principal.actor.removeprefix("agent:"))
        agent_id = request.headers.get("x-agent-id", DEFAULT_AGENT_ID)
        if not _AGENT_ID.fullmatch(agent_id):
            raise InvalidInput("X-Agent-Id must be 1-64 characters of letters, digits, . _ @ -")
        return AgentCaller(principal=principal, agent_id=agent_id)

    require_agent = Depends(agent)

    async def own_conversation(caller: AgentCaller, conversation_id: uuid.UUID) -> None:
        async with backend.sessionmaker() as session:
            conv = await repo.get_conversation(session, conversation_id=conversation_id)
        if conv.tenant_id != caller.principal.tenant_id or not caller.principal.sees_brand(conv.brand_id):
            # the same 404 as an id that names nothing
            raise NotFound("unknown conversation", details={"conversation_id": str(conversation_id)})

    async def record(caller: AgentCaller, action: str, conversation_id: uuid.UUID, **after: Any) -> None:
        await Management(backend.sessionmaker).record(
            caller.actor, action=action, target_type="conversation", target_id=conversation_id, after=after
        )

    def accounts() -> AgentAccounts:
        return AgentAccounts(backend.sessionmaker, session_hours=backend.settings.api.agent_session_hours)

    @router.post("/v1/agents/sessions", response_model=SessionOut, status_code=201, dependencies=[PUBLIC])
    async def sign_in(body: SignInIn) -> SessionOut:
        # Public by nature: the password is the credential (argon2id; the same 401 for every refusal).
        return await accounts().sign_in(body)

    @router.delete("/v1/agents/sessions/current", status_code=204)
    async def sign_out(request: Request, principal: Principal = requires(Scope.AGENTS)) -> None:
        for prefix in await accounts().sign_out(principal):
            authenticator(request).forget(prefix)  # other replicas follow within API__KEY_CACHE_TTL_S

    @router.get("/v1/agents/me", response_model=AgentMeOut)
    async def me(caller: AgentCaller = require_agent) -> AgentMeOut:
        return AgentMeOut(
            agent=caller.agent_id,
            signed_in=caller.principal.agent_id is not None,
            brand_ids=None if caller.principal.brand_ids is None else sorted(caller.principal.brand_ids),
        )

    @router.get("/agent", response_class=HTMLResponse, include_in_schema=False, dependencies=[PUBLIC])
    async def console() -> HTMLResponse:
        page = resources.files("serve_apps").joinpath("agent_console.html").read_text(encoding="utf-8")
        return HTMLResponse(page)

    @router.get("/v1/agents/brands/{brand_id}/conversations", response_model=list[ConversationSummaryOut])
    async def queue(
        brand_id: uuid.UUID,
        caller: AgentCaller = require_agent,
        state: ConversationState = ConversationState.HANDOFF,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> list[ConversationSummaryOut]:
        async with backend.sessionmaker() as session:
            await repo.require_brand(session, brand_id=brand_id, tenant_id=caller.principal.tenant_id)
            conversations = await repo.list_conversations(
                session, brand_id=brand_id, state=state, limit=limit
            )
            out = []
            for conv in conversations:
                recent = await repo.recent_messages(session, conversation_id=conv.id, limit=10)
                out.append(_summary(conv, recent))
        return out

    @router.get("/v1/agents/brands/{brand_id}/events", response_class=StreamingResponse)
    async def events(
        brand_id: uuid.UUID, request: Request, caller: AgentCaller = require_agent
    ) -> StreamingResponse:
        # The queue, live: handoffs, replies, take-overs and releases of this brand as they commit.
        async with backend.sessionmaker() as session:
            await repo.require_brand(session, brand_id=brand_id, tenant_id=caller.principal.tenant_id)
        stream = queue_events(
            settings=backend.settings,
            redis=backend.redis,
            tenant_id=brand_tenant(caller),
            brand_id=brand_id,
            after=request.headers.get("last-event-id"),
            is_disconnected=request.is_disconnected,
        )
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.get("/v1/agents/media/{media_id}/content", response_class=Response)
    async def media_content(media_id: uuid.UUID, caller: AgentCaller = require_agent) -> Response:
        # What the customer sent, for the agent who answers (the console fetches it with the session).
        return await media_download(backend.sessionmaker, media_store, caller.principal, media_id)

    @router.get("/v1/agents/conversations/{conversation_id}", response_model=AgentConversationOut)
    async def conversation(
        conversation_id: uuid.UUID, caller: AgentCaller = require_agent
    ) -> AgentConversationOut:
        async with backend.sessionmaker() as session:
            found = await repo.get_conversation_with_messages(session, conversation_id=conversation_id)
            if (
                found is None
                or found[0].tenant_id != caller.principal.tenant_id
                or not caller.principal.sees_brand(found[0].brand_id)
            ):
                raise NotFound("unknown conversation", details={"conversation_id": str(conversation_id)})
            conv, messages = found
            actions = await repo.list_action_logs(session, conversation_id=conversation_id)
            deliveries = await repo.deliveries_for(session, message_ids=[m.id for m in messages])
            media = await repo.media_for(session, message_ids=[m.id for m in messages])
        return AgentConversationOut(
            **conversation_fields(conv),
            messages=[_message(m, deliveries.get(m.id), media.get(m.id)) for m in messages],
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
        conversation_id: uuid.UUID, body: AgentReplyIn, caller: AgentCaller = require_agent
    ) -> AgentReplyOut:
        await own_conversation(caller, conversation_id)
        sent: OutboundResponse = await backend.orchestrator.agent_reply(
            conversation_id, body.text, caller.agent_id
        )
        log.info("agent_replied", conversation_id=str(conversation_id), agent_id=caller.agent_id)
        await record(caller, "agent.reply", conversation_id, message_id=str(sent.message_id))
        return AgentReplyOut(conversation_id=sent.conversation_id, message_id=sent.message_id, text=sent.text)

    @router.post(
        "/v1/agents/conversations/{conversation_id}/attachments",
        response_model=AgentReplyOut,
        status_code=201,
    )
    async def attach(
        conversation_id: uuid.UUID, request: Request, caller: AgentCaller = require_agent
    ) -> AgentReplyOut:
        # multipart/form-data: ``file`` (a picture or a document) and an optional ``caption``.
        await own_conversation(caller, conversation_id)
        limit = backend.settings.media.max_bytes
        upload, caption = await _attachment_form(request, max_bytes=limit)
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise PayloadTooLarge("the file is too large", details={"max_bytes": limit})
        file = AgentFile(
            data=data, mime_type=upload.content_type or "", filename=upload.filename or "", caption=caption
        )
        sent: OutboundResponse = await backend.orchestrator.agent_attachment(
            conversation_id, file, caller.agent_id
        )
        await record(caller, "agent.attachment", conversation_id, message_id=str(sent.message_id))
        return AgentReplyOut(conversation_id=sent.conversation_id, message_id=sent.message_id, text=sent.text)

    @router.post("/v1/agents/conversations/{conversation_id}/release", response_model=StateOut)
    async def release(conversation_id: uuid.UUID, caller: AgentCaller = require_agent) -> StateOut:
        await own_conversation(caller, conversation_id)
        state: ConversationState = await backend.orchestrator.release(conversation_id, caller.agent_id)
        await record(caller, "agent.release", conversation_id, state=str(state))
        return StateOut(conversation_id=conversation_id, state=state)

    @router.post("/v1/agents/conversations/{conversation_id}/takeover", response_model=StateOut)
    async def takeover(conversation_id: uuid.UUID, caller: AgentCaller = require_agent) -> StateOut:
        await own_conversation(caller, conversation_id)
        state: ConversationState = await backend.orchestrator.take_over(conversation_id, caller.agent_id)
        await record(caller, "agent.takeover", conversation_id, state=str(state))
        return StateOut(conversation_id=conversation_id, state=state)

    return router


async def _attachment_form(request: Request, *, max_bytes: int) -> tuple[UploadFile, str]:
    """The ``file`` and ``caption`` of an attachment upload; a clear 4xx for any other body."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise UnsupportedMediaType(
            "send multipart/form-data with a file field (and an optional caption)",
            details={"content_type": media},
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        raise PayloadTooLarge("the file is too large", details={"max_bytes": max_bytes})
    form = await request.form(max_files=1, max_fields=4)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("no file in the form (field 'file')")
    caption = form.get("caption")
    return upload, caption if isinstance(caption, str) else ""


def brand_tenant(caller: AgentCaller) -> uuid.UUID:
    """The caller's tenant (``agents`` is a tenant scope: there always is one)."""
    if caller.principal.tenant_id is None:  # pragma: no cover - requires() lets no tenantless caller in
        raise NotFound("unknown brand")
    return caller.principal.tenant_id


def _sender(row: Any) -> Literal["customer", "bot", "agent"]:
    if row.direction == Direction.INBOUND:
        return "customer"
    return "agent" if any(g.get("rule") == AGENT_RULE for g in (row.guardrails or [])) else "bot"


def _message(row: Any, delivery: Any | None = None, media: Any | None = None) -> AgentMessageOut:
    return AgentMessageOut(
        **message_fields(row),
        sender=_sender(row),
        delivery=delivery_out(delivery),
        media=media_out(media, content_path="/v1/agents/media"),
    )


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
