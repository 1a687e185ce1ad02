"""The agent console in a real browser (Debian chromium via selenium), against the real agent API.

What runs for real: the gateway app under uvicorn, Postgres, Redis, Qdrant local mode, the embedding
model with the demo knowledge. Simulated, by name: ``ScriptedChatModel`` (a test double returning a
fixed grounded sentence) is the chat model.

Flow: a customer asks for a person → the conversation is in handoff → an agent opens ``/agent``, signs in
with the workspace, email and password of an agent account, picks the brand from the list, sees the
conversation waiting, opens it, replies (the reply is stored and queued on the outbound stream with
``sender="agent"``, and audited as that account) and releases it → the bot answers the customer again.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from common.access.agents import AgentAccountIn, AgentAccounts
from common.access.principal import Scope, operator_principal
from common.config import ServiceEndpoints, Settings
from pipelines.demo import DemoBrand, demo_documents, seed_demo_brand
from serve_apps.gateway.app import build_gateway_api
from serve_apps.inprocess import InProcessBackend
from tests.auth import key_headers
from tests.e2e.test_widget_browser import ARTIFACTS, WAIT_S, _free_port, _wait, browser  # noqa: F401
from tests.fakes.chat import ScriptedChatModel
from tests.integration.conversation.test_orchestration import RETURNS_ANSWER

pytestmark = pytest.mark.integration

AGENT_PASSWORD = "a long passphrase for Sam"


class ConsoleServer:
    """Gateway app on a background thread's event loop, with the demo brand seeded and indexed."""

    def __init__(self, endpoints: ServiceEndpoints) -> None:
        # answers.mode=generate: the scripted model stands in for a capable one and its answer is sent.
        self.settings = Settings(answers={"mode": "generate"})
        self.agent_email = "sam@acme.test"  # an agent account of the demo tenant: what a person signs in with
        self.messages_headers: dict[str, str] = {}
        self.endpoints = endpoints
        self.port = _free_port()
        self.ready = threading.Event()
        self.demo: DemoBrand | None = None
        self.backend: InProcessBackend | None = None
        self.error: BaseException | None = None
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        if not self.ready.wait(180) or self.error is not None:
            raise RuntimeError(f"console server did not start: {self.error!r}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start()
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        backend = InProcessBackend(
            self.settings, self.endpoints, chat_model=ScriptedChatModel(RETURNS_ANSWER)
        )
        self.backend = backend
        self.demo = await seed_demo_brand(backend.sessionmaker)
        await backend.knowledge.ingest(self.demo.tenant.id, self.demo.brand.id, demo_documents())
        await AgentAccounts(backend.sessionmaker).create(
            operator_principal("operator:test"),
            self.demo.tenant.id,
            AgentAccountIn(email=self.agent_email, display_name="Sam", password=SecretStr(AGENT_PASSWORD)),
        )
        self.messages_headers = await key_headers(
            backend.sessionmaker, self.demo.tenant.id, Scope.MESSAGES_WRITE
        )
        self._server = uvicorn.Server(
            uvicorn.Config(build_gateway_api(backend), host="127.0.0.1", port=self.port, log_level="warning")
        )
        task = asyncio.create_task(self._server.serve())
        while not self._server.started and not task.done():
            await asyncio.sleep(0.05)
        self.ready.set()
        try:
            await task
        finally:
            await backend.aclose()


@pytest.fixture
def console(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[ConsoleServer]:
    endpoints = ServiceEndpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=f"{redis_prefix}:{uuid.uuid4().hex[:6]}",
        qdrant_path=tmp_path / "q",
    )
    server = ConsoleServer(endpoints)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_agent_takes_over_replies_and_releases_in_the_console(console: ConsoleServer, browser) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    assert console.demo is not None
    brand_id = str(console.demo.brand.id)
    customer = f"console-{uuid.uuid4().hex[:8]}"

    def ask(text: str) -> dict[str, object]:
        body = {"brand_id": brand_id, "customer_id": customer, "text": text, "channel": "whatsapp"}
        resp = httpx.post(
            f"{console.url}/v1/messages/inbound", json=body, headers=console.messages_headers, timeout=60
        )
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]

    first = ask("I want to talk to a real person please")
    assert first["escalated"] is True
    conversation_id = str(first["conversation_id"])

    browser.get(f"{console.url}/agent")
    browser.find_element(By.ID, "tenant").send_keys(console.demo.tenant.slug)
    browser.find_element(By.ID, "email").send_keys(console.agent_email)
    browser.find_element(By.ID, "password").send_keys(AGENT_PASSWORD)
    browser.find_element(By.ID, "signin").click()  # lists the agent's brands: no id or token typed by hand
    _wait(browser, lambda d: console.agent_email in d.find_element(By.ID, "who").text, "not signed in")
    _wait(
        browser,
        lambda d: (
            brand_id in [o.get_attribute("value") for o in d.find_elements(By.CSS_SELECTOR, "#brand option")]
        ),
        "the tenant's brands not listed",
    )
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "brand")).select_by_value(brand_id)
    browser.find_element(By.ID, "load").click()
    _wait(
        browser,
        lambda d: customer in d.find_element(By.ID, "queue").text,
        "conversation not listed as waiting",
    )
    # The queue is live: a customer who asks for a person now appears without a reload.
    _wait(browser, lambda d: d.find_element(By.ID, "live").text == "live", "live queue not connected")
    latecomer = f"late-{uuid.uuid4().hex[:8]}"
    late = httpx.post(
        f"{console.url}/v1/messages/inbound",
        json={
            "brand_id": brand_id,
            "customer_id": latecomer,
            "text": "A human agent please",
            "channel": "whatsapp",
        },
        headers=console.messages_headers,
        timeout=60,
    )
    assert late.json()["escalated"] is True, late.text
    _wait(browser, lambda d: latecomer in d.find_element(By.ID, "queue").text, "queue did not update live")

    browser.find_element(By.CSS_SELECTOR, "#queue .conv").click()
    _wait(
        browser, lambda d: "state: handoff" in d.find_element(By.ID, "header").text, "conversation not opened"
    )
    assert "real person" in browser.find_element(By.ID, "messages").text

    browser.find_element(By.ID, "reply").send_keys("Hi, this is Sam from Customer Care. How can I help?")
    browser.find_element(By.ID, "send").click()
    _wait(
        browser,
        lambda d: "Sam from Customer Care" in d.find_element(By.ID, "messages").text,
        "agent reply not shown",
    )
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "agent-console.png"))

    browser.find_element(By.ID, "release").click()
    _wait(
        browser, lambda d: "state: bot" in d.find_element(By.ID, "header").text, "conversation not released"
    )

    # The agent's reply took the normal delivery path, marked as an agent message.
    assert console.backend is not None
    outbound_key = console.backend.settings.redis.key("stream", "outbound")

    async def outbound() -> list[dict[str, object]]:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(console.endpoints.redis_url, decode_responses=True)
        try:
            return [json.loads(f["data"]) for _, f in await client.xrange(outbound_key)]
        finally:
            await client.aclose()

    sent = [p for p in asyncio.run(outbound()) if p["conversation_id"] == conversation_id]
    agent_sent = [p for p in sent if p.get("sender") == "agent"]
    assert [p["text"] for p in agent_sent] == ["Hi, this is Sam from Customer Care. How can I help?"]

    # The reply, the release: done by the signed-in account, as the audit log says.
    async def actors() -> list[tuple[str, str]]:
        from sqlalchemy import select

        from common.db.models import AuditEntry

        assert console.backend is not None
        async with console.backend.sessionmaker() as session:
            rows = await session.execute(
                select(AuditEntry.action, AuditEntry.actor).where(AuditEntry.target_id == conversation_id)
            )
            return sorted(rows.tuples())

    assert asyncio.run(actors()) == [
        ("agent.release", "agent:sam@acme.test"),
        ("agent.reply", "agent:sam@acme.test"),
    ]

    # Released: the bot answers again.
    again = ask("How long do I have to return an item?")
    assert again["escalated"] is False and again["text"] == RETURNS_ANSWER
