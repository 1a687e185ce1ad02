"""``python -m serve_apps.single_process``: the whole system in one process, as the load bench runs it.

A real subprocess against the test Postgres and Redis: a web chat turn answered over HTTP, a signed
WhatsApp webhook answered at the provider SIMULATOR (inbound worker + dispatcher in the same process),
and a clean exit on SIGINT (workers and pools closed, no traceback).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from bench.llm_stub import StubServer
from common.config import ServiceEndpoints
from common.db import migrate
from pipelines.demo import (
    SIM_PHONE_NUMBER_ID,
    DemoBrand,
    demo_documents,
)
from serve_apps.simulator.scenarios import late_message, ticket_by_tap
from serve_apps.simulator.server import SimulatorServer
from serve_apps.simulator.state import SentMessage
from serve_apps.simulator.webhooks import (
    WebhookFirer,
    sign_meta,
    whatsapp_media,
    whatsapp_message,
    whatsapp_update,
)
from tests.auth import key_headers_sync
from tests.conftest import listen_port
from tests.fakes.pipeline import seed_demo_world

META_SECRET = "single-process-meta-secret"
T = TypeVar("T")


@pytest.fixture(scope="module")
def single(
    make_database: Callable[[], str],
    redis_url: str,
    redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, DemoBrand, SimulatorServer, subprocess.Popen[bytes], Path, dict[str, str]]]:
    database_url = make_database()
    migrate.upgrade(database_url)
    demo = seed_demo_world(database_url, telegram_bot_id="4242424242")
    headers = key_headers_sync(database_url, demo.tenant.id)
    endpoints = ServiceEndpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=f"{redis_prefix}:single{uuid.uuid4().hex[:6]}",
        qdrant_path=tmp_path_factory.mktemp("qdrant"),
    )
    log_path = tmp_path_factory.mktemp("single") / "server.log"
    port = listen_port()
    with SimulatorServer(port=0) as sim, StubServer(latency_ms=10) as stub, log_path.open("wb") as log:
        env = {
            **os.environ,
            "CHANNELS__META_APP_SECRET": META_SECRET,
            "CHANNELS__META_ACCESS_TOKEN": "single-process-token",
            "CHANNELS__META_GRAPH_URL": sim.url,
            "CHANNELS__TELEGRAM_API_URL": sim.url,
            "MEDIA__TRANSCRIPTION_URL": f"{sim.url}/v1",  # the simulator's SIMULATED speech-to-text
            "ACTIONS__HELPDESK_BASE_URL": f"{sim.url}/_sim/helpdesk",  # ... and its SIMULATED helpdesk
            "LLM_PROVIDER": "openai",
            "LLM_BASE_URL": stub.base_url,
            "LLM_MODEL": "stub",
            "HF_HUB_OFFLINE": "1",
            "LOG_JSON": "true",
        }
        cmd = [sys.executable, "-m", "serve_apps.single_process", "--port", str(port)]
        proc = subprocess.Popen(
            [*cmd, "--endpoints", endpoints.model_dump_json()], env=env, stdout=log, stderr=log
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
            else:
                pytest.fail(f"single process did not start:\n{log_path.read_text()[-3000:]}")
            upload = httpx.post(
                f"{base}/v1/brands/{demo.brand.id}/knowledge",
                json=demo_documents().model_dump(mode="json"),
                headers=headers,
                timeout=120,
            )
            assert upload.status_code == 201, upload.text
            yield base, demo, sim, proc, log_path, headers
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_web_chat_turn_is_answered_over_http(
    single: tuple[str, DemoBrand, SimulatorServer, object, Path, dict[str, str]],
) -> None:
    base, demo, _, _, _, headers = single
    body = {"brand_id": str(demo.brand.id), "customer_id": "single-1", "text": "Do you ship internationally?"}
    resp = httpx.post(f"{base}/v1/messages/inbound", json=body, headers=headers, timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.json()["text"]


def test_webhook_is_drafted_and_delivered_by_the_same_process(
    single: tuple[str, DemoBrand, SimulatorServer, object, Path, dict[str, str]],
) -> None:
    base, _, sim, _, _, _ = single
    msg = whatsapp_message(sender="15550001111", text="What is your return policy?")
    assert len(_replies_to_whatsapp(base, sim, msg)) == 1


def test_a_voice_note_is_transcribed_and_answered_like_text(
    single: tuple[str, DemoBrand, SimulatorServer, object, Path, dict[str, str]],
) -> None:
    """What ``make simulate`` shows: the WhatsApp voice note is fetched from the provider, transcribed,
    and its words are answered from the brand's knowledge (not with the media message)."""
    base, _, sim, _, _, _ = single
    audio = sim.state.add_media(
        b"OggS" + os.urandom(1024), mime_type="audio/ogg", transcript="What is your return policy?"
    )
    note = whatsapp_media(
        sender="15550003333", kind="audio", media_id=audio.id, mime_type="audio/ogg", voice=True
    )
    replies = _replies_to_whatsapp(base, sim, note)
    assert len(replies) == 1
    assert "only read text" not in replies[0].text and "return" in replies[0].text.lower()


def test_a_ticket_is_confirmed_by_a_tap_on_the_yes_button(
    single: tuple[str, DemoBrand, SimulatorServer, object, Path, dict[str, str]],
) -> None:
    """What ``make simulate`` shows: the demo brand's offer rule asks before opening a ticket, with reply
    buttons; the tap (no typing) is the confirmation, and the SIMULATED helpdesk gets the ticket."""
    base, _, sim, _, _, _ = single
    text = "My tent zipper broke on the first night. Please open a ticket."
    journey = asyncio.run(
        _play(
            base,
            lambda firer: ticket_by_tap(
                firer,
                sim.state,
                phone_number_id=SIM_PHONE_NUMBER_ID,
                sender="15550004444",
                text=text,
                timeout_s=60,
            ),
        )
    )
    assert journey.ok, journey
    assert journey.asked is not None and journey.asked.text.startswith(
        f'Shall I open a ticket for our team about "{text}"'
    )
    assert [b["title"] for b in journey.buttons] == ["Yes", "No"]
    assert journey.ticket is not None and journey.ticket["subject"] == text
    assert journey.ticket["customer_id"] == "15550004444" and journey.ticket["channel"] == "whatsapp"
    assert journey.done is not None and journey.done.text.startswith(
        f"Done: I opened ticket {journey.ticket['id']}"
    )


def test_a_message_delivered_a_day_late_is_answered_with_the_template(
    single: tuple[str, DemoBrand, SimulatorServer, object, Path, dict[str, str]],
) -> None:
    base, _, sim, _, _, _ = single
    reply = asyncio.run(
        _play(
            base,
            lambda firer: late_message(
                firer,
                sim.state,
                phone_number_id=SIM_PHONE_NUMBER_ID,
                sender="15550005555",
                text="What is your return policy?",
                hours_late=25,
                timeout_s=60,
            ),
        )
    )
    assert reply is not None and reply.body["type"] == "template"
    assert reply.text.startswith("template:support_followup:en_US|") and "return" in reply.text.lower()


async def _play(base: str, journey: Callable[[WebhookFirer], Awaitable[T]]) -> T:
    firer = WebhookFirer(base, meta_app_secret=META_SECRET)
    try:
        return await journey(firer)
    finally:
        await firer.aclose()


def _replies_to_whatsapp(base: str, sim: SimulatorServer, item: dict) -> list[SentMessage]:
    """Fire one signed WhatsApp message at the gateway; the sends quoting it, waiting up to 60 s."""
    body = httpx.Request(
        "POST", "/", json=whatsapp_update(phone_number_id=SIM_PHONE_NUMBER_ID, messages=[item])
    ).read()
    headers = {"X-Hub-Signature-256": sign_meta(body, META_SECRET), "content-type": "application/json"}
    ack = httpx.post(f"{base}/webhooks/whatsapp", content=body, headers=headers, timeout=30)
    assert ack.status_code == 200, ack.text
    wamid = item["message"]["id"]
    deadline = time.monotonic() + 60
    while not sim.state.replies_to(wamid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return sim.state.replies_to(wamid)


def test_sigint_stops_serving_and_closes_cleanly(
    single: tuple[str, DemoBrand, SimulatorServer, subprocess.Popen[bytes], Path, dict[str, str]],
) -> None:
    _, _, _, proc, log_path, _ = single
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    assert "Traceback" not in log_path.read_text()


def test_bad_endpoints_are_a_usage_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "serve_apps.single_process", "--endpoints", '{"database_url": 1}'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "--endpoints" in out.stderr and "Traceback" not in out.stderr
