"""The web chat in a real browser (Debian chromium, driven by selenium through /usr/bin/chromedriver).

What runs for real: the gateway app under uvicorn, Postgres, Redis, Qdrant local mode, the
all-MiniLM-L6-v2 embedding model with the demo knowledge ingested, the real inbound worker
(:class:`common.conversation.inbound_worker.InboundWorker`) and the real delivery worker (outbox relay +
dispatcher
with the registered :class:`WebchatSender`), each in the server's event loop.

Simulated, by name: ``ScriptedChatModel`` (test double returning a fixed grounded sentence) is the chat
model, and ``process_slowly`` adds one second before each answer so the typing state is observable.

Flow: open ``/chat/{brand_id}``, ask the demo question with the keyboard, see typing, the grounded answer
and its citation (source, then heading path), save ``test-artifacts/webchat.png``, reload and see the history;
then embed ``/widget.js`` with one script tag in a page of another origin and chat through the launcher.
Install the browser with ``tests/e2e/install_browser.sh``; without it this test skips, saying so.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import delete

from common.config import ServiceEndpoints, Settings
from common.conversation.inbound_worker import InboundWorker, WorkerConfig
from common.db import repositories as repo
from common.db.models import ChannelConfig
from common.delivery.worker import DeliveryWorker
from common.domain import Channel
from pipelines.demo import demo_documents, load_demo_brand, seed_demo_brand
from serve_apps.gateway.app import build_gateway_api
from serve_apps.inprocess import InProcessBackend
from tests.fakes.chat import ScriptedChatModel
from tests.integration.conversation.test_orchestration import RETURNS_ANSWER

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
QUESTION = "How long do I have to return an item?"
CITATION = "returns.md \u203a Returns & Refunds \u203a Return Window"
WAIT_S = 60
SUGGESTIONS = [
    "Delivery times",
    "How do I return?",
    "Refunds",
    "Payment methods",
    "Store hours",
    "Warranty claims",
]
GREEN = {"rgba(10, 125, 56, 1)", "rgb(10, 125, 56)"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GatewayThread:
    """The gateway app, inbound worker and delivery worker in one event loop on a background thread."""

    def __init__(self, settings: Settings, endpoints: ServiceEndpoints, token: str) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.token = token
        self.port = _free_port()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=self._run, name="e2e-gateway", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        if not self.ready.wait(180):
            raise TimeoutError("gateway did not start")
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced to the test thread by start()
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        backend = InProcessBackend(
            self.settings, self.endpoints, chat_model=ScriptedChatModel(RETURNS_ANSWER)
        )
        demo = await seed_demo_brand(backend.sessionmaker)
        await backend.knowledge.ingest(demo.tenant.id, demo.brand.id, demo_documents())
        async with backend.sessionmaker() as session:
            await repo.upsert_channel_config(
                session, tenant_id=demo.tenant.id, brand_id=demo.brand.id, channel=Channel.WEBCHAT,
                external_id=self.token, settings={"primary_color": "#0a7d38"},
            )  # fmt: skip
            await session.commit()

        async def process_slowly(inbound_id: uuid.UUID):  # simulated worker latency
            await asyncio.sleep(1.0)
            return await backend.orchestrator.process_stored(inbound_id)

        stop = asyncio.Event()
        inbound = InboundWorker(
            redis=backend.redis, redis_settings=backend.settings.redis, process=process_slowly,
            config=WorkerConfig(consumer="e2e", block_ms=200),
        )  # fmt: skip
        delivery = DeliveryWorker(
            settings=backend.settings, sessionmaker=backend.sessionmaker, redis=backend.redis, consumer="e2e"
        )
        inbound_task = asyncio.create_task(inbound.run_forever(stop))
        delivery.start()
        self._server = uvicorn.Server(
            uvicorn.Config(
                build_gateway_api(backend), host="127.0.0.1", port=self.port, log_level="warning",
                timeout_graceful_shutdown=2,
            )
        )  # fmt: skip
        server_task = asyncio.create_task(self._server.serve())
        while not self._server.started and not server_task.done():
            await asyncio.sleep(0.05)
        self.ready.set()
        try:
            await server_task
        finally:
            stop.set()
            await delivery.stop()
            await inbound_task
            async with backend.sessionmaker() as session:  # the database is shared by the test session
                await session.execute(delete(ChannelConfig).where(ChannelConfig.external_id == self.token))
                await session.commit()
            await backend.aclose()


@pytest.fixture
def gateway(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[GatewayThread]:
    endpoints = ServiceEndpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=f"{redis_prefix}:{uuid.uuid4().hex[:6]}",
        qdrant_path=tmp_path / "q",
    )
    # answers.mode=generate: the scripted model stands in for a capable one and its answer is sent.
    gw = GatewayThread(Settings(answers={"mode": "generate"}), endpoints, token=f"wt_{uuid.uuid4().hex}")
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("chromium/chromedriver not installed: run tests/e2e/install_browser.sh (apt, needs root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1100,850",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition, message)


def _replies(driver) -> list[tuple[str, list[str]]]:
    """(text, sources) of every assistant message in the log, greeting first."""
    from selenium.webdriver.common.by import By

    out = []
    for li in driver.find_elements(By.CSS_SELECTOR, "ol[role=log] li.assistant:not(.typing)"):
        sources = [s.text for s in li.find_elements(By.CSS_SELECTOR, "ul.sources li")]
        out.append((li.text, sources))
    return out


def _answered(driver) -> bool:
    return any(RETURNS_ANSWER in text and CITATION in sources for text, sources in _replies(driver))


def _ask_with_keyboard(driver) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = driver.switch_to.active_element
    assert field.get_attribute("name") == "text", "the message input should have focus"
    field.send_keys(QUESTION, Keys.ENTER)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "li.typing"), "typing indicator shown")
    assert field.get_attribute("value") == "" and driver.switch_to.active_element == field
    _wait(driver, _answered, "grounded answer with its citation")
    assert not driver.find_elements(By.CSS_SELECTOR, "li.typing"), "typing indicator removed"


def test_chat_page_answers_cites_and_reloads_history(gateway: GatewayThread, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    brand = load_demo_brand().brand
    driver.get(f"{gateway.base_url}/chat/{brand.id}")
    field = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#chat input[name=text]"), "chat mounted")

    # Accessible structure: labelled input, live log, the brand's name and greeting.
    label = driver.find_element(By.CSS_SELECTOR, f"label[for='{field.get_attribute('id')}']")
    assert label.get_attribute("textContent").strip()
    log = driver.find_element(By.CSS_SELECTOR, "ol[role=log]")
    assert log.get_attribute("aria-live") == "polite"
    assert driver.find_element(By.CSS_SELECTOR, "#chat h2").text == "Acme Outdoor"
    greeting = driver.find_element(By.CSS_SELECTOR, "ol[role=log] li.greeting")
    assert brand.persona.greeting in greeting.text
    # The brand's suggested questions under the greeting, until the first message.
    assert [b.text for b in greeting.find_elements(By.CSS_SELECTOR, ".buttons button")] == SUGGESTIONS

    _ask_with_keyboard(driver)
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / "webchat.png"))

    driver.refresh()
    _wait(driver, _answered, "history restores the answer and its citation after reload")
    visitor_texts = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "ol[role=log] li.visitor")]
    assert visitor_texts == [QUESTION]
    assert len([r for r in _replies(driver) if RETURNS_ANSWER in r[0]]) == 1


def test_a_question_not_covered_offers_the_suggestions_and_a_tap_asks_one(
    gateway: GatewayThread, browser
) -> None:
    """The demo brand's ``suggest`` rule in the browser: the fallback shows its questions as buttons, a
    click sends that text as the visitor's message (no typing), and the answer replaces the buttons."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser
    driver.get(f"{gateway.base_url}/chat/{load_demo_brand().brand.id}")
    field = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#chat input[name=text]"), "chat mounted")
    field.send_keys("Can you recommend a good pizza place near your store?", Keys.ENTER)
    buttons = _wait(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, "ol[role=log] li:not(.greeting) .buttons button"),
        "the suggestions under the fallback",
    )
    labels = [b.text for b in buttons]
    assert labels == SUGGESTIONS
    assert not driver.find_elements(By.CSS_SELECTOR, "li.greeting .buttons"), "the greeting's went"
    answered = len(_replies(driver))
    buttons[labels.index("Refunds")].click()
    _wait(
        driver,
        lambda d: (
            [li.text for li in d.find_elements(By.CSS_SELECTOR, "ol[role=log] li.visitor")][-1:]
            == ["Refunds"]
        ),
        "the tap sent as the visitor's message",
    )
    _wait(driver, lambda d: len(_replies(d)) > answered, "the suggestion answered")
    assert not driver.find_elements(By.CSS_SELECTOR, "ol[role=log] .buttons button"), "buttons gone"


def test_one_script_tag_embeds_the_widget_cross_origin(
    gateway: GatewayThread, browser, tmp_path: Path
) -> None:
    """A shop page on another origin embeds ``/widget.js``; CORS lets it post, read history and stream."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    site = tmp_path / "shop"
    site.mkdir()
    (site / "index.html").write_text(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Shop</title></head><body>"
        "<h1>Acme shop</h1>"
        f'<script src="{gateway.base_url}/widget.js" data-token="{gateway.token}" async></script>'
        "</body></html>",
        encoding="utf-8",
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    shop = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=shop.serve_forever, daemon=True).start()
    try:
        driver = browser
        driver.get(f"http://127.0.0.1:{shop.server_address[1]}/index.html")
        launcher = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "button.launcher"), "launcher")
        assert launcher.get_attribute("aria-expanded") == "false"
        assert launcher.value_of_css_property("background-color") in GREEN  # the widget's display settings
        launcher.send_keys(Keys.ENTER)  # keyboard opens it and moves focus into the input
        assert launcher.get_attribute("aria-expanded") == "true"
        _wait(driver, lambda d: d.switch_to.active_element.get_attribute("name") == "text", "focus in input")
        _ask_with_keyboard(driver)
        driver.switch_to.active_element.send_keys(Keys.ESCAPE)  # closes and returns focus to the launcher
        assert launcher.get_attribute("aria-expanded") == "false"
        assert driver.switch_to.active_element == launcher
    finally:
        shop.shutdown()
        shop.server_close()


def test_install_script_is_idempotent() -> None:
    script = Path(__file__).with_name("install_browser.sh")
    assert os.access(script, os.X_OK)
    if not (CHROMIUM.exists() and shutil.which("sh")):
        pytest.skip("chromium not installed; the script would try apt-get")
    import subprocess

    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=30, check=True)
    assert "already installed" in done.stdout
