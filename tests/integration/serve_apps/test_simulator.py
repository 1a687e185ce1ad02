"""The provider SIMULATOR: wire format of its send endpoints, fault injection, and signed webhooks.

Signatures are checked with an HMAC computed here, independently of the simulator's signing code.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx
import pytest

from serve_apps.simulator import SimulatorServer
from serve_apps.simulator.webhooks import (
    WebhookFirer,
    batch,
    instagram_echo,
    instagram_message,
    instagram_update,
    telegram_update,
    whatsapp_message,
    whatsapp_status,
    whatsapp_update,
)

pytestmark = pytest.mark.integration

APP_SECRET = "sim-app-secret"


@pytest.fixture(scope="module")
def sim():
    with SimulatorServer(meta_access_token="tok", telegram_bot_token="9:bot") as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(sim):
    sim.state.clear()


def test_records_sends_in_provider_wire_format(sim):
    with httpx.Client(base_url=sim.url) as client:
        wa = client.post(
            "/v21.0/PN1/messages",
            headers={"Authorization": "Bearer tok"},
            json={
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "155500",
                "type": "text",
                "text": {"body": "hello", "preview_url": False},
                "context": {"message_id": "wamid.X"},
            },
        )
        ig = client.post(
            "/v21.0/IG1/messages",
            headers={"Authorization": "Bearer tok"},
            json={"recipient": {"id": "igsid"}, "message": {"text": "hi ig"}},
        )
        tg = client.post(
            "/bot9:bot/sendMessage",
            json={"chat_id": 42, "text": "hi tg", "reply_parameters": {"message_id": 3}},
        )
        recorded = client.get("/_sim/sent").json()
    assert wa.status_code == 200 and wa.json()["messages"][0]["id"].startswith("wamid.")
    assert ig.json()["recipient_id"] == "igsid" and ig.json()["message_id"].startswith("mid.")
    assert tg.json()["ok"] is True and tg.json()["result"]["chat"]["id"] == 42
    assert [(r["channel"], r["account"], r["recipient"], r["text"], r["reply_to"]) for r in recorded] == [
        ("whatsapp", "PN1", "155500", "hello", "wamid.X"),
        ("instagram", "IG1", "igsid", "hi ig", None),
        ("telegram", "9", "42", "hi tg", "3"),
    ]


def test_rejects_bad_credentials_and_over_limit_text(sim):
    with httpx.Client(base_url=sim.url) as client:
        bad_token = client.post("/v21.0/PN1/messages", headers={"Authorization": "Bearer nope"}, json={})
        too_long = client.post(
            "/v21.0/IG1/messages",
            headers={"Authorization": "Bearer tok"},
            json={"recipient": {"id": "x"}, "message": {"text": "y" * 1001}},
        )
        bad_bot = client.post("/bot9:wrong/sendMessage", json={"chat_id": 1, "text": "x"})
    assert bad_token.status_code == 401 and bad_token.json()["error"]["code"] == 190
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == 100
    assert bad_bot.status_code == 401 and bad_bot.json()["ok"] is False
    assert sim.state.sent() == []


def test_faults_for_the_next_calls(sim):
    with httpx.Client(base_url=sim.url, timeout=0.3) as client:
        assert (
            client.post(
                "/_sim/faults", json={"kind": "429", "count": 2, "retry_after_s": 5, "channel": "telegram"}
            ).status_code
            == 200
        )
        client.post(
            "/_sim/faults", json={"kind": "timeout", "count": 1, "delay_s": 1.0, "channel": "whatsapp"}
        )
        first = client.post("/bot9:bot/sendMessage", json={"chat_id": 1, "text": "a"})
        second = client.post("/bot9:bot/sendMessage", json={"chat_id": 1, "text": "a"})
        third = client.post("/bot9:bot/sendMessage", json={"chat_id": 1, "text": "a"})
        with pytest.raises(httpx.ReadTimeout):
            client.post(
                "/v21.0/PN1/messages",
                headers={"Authorization": "Bearer tok"},
                json={"messaging_product": "whatsapp", "to": "1", "type": "text", "text": {"body": "b"}},
            )
    assert first.status_code == 429 and first.json()["parameters"] == {"retry_after": 5}
    assert second.status_code == 429 and third.status_code == 200
    assert [s.channel for s in sim.state.sent()] == ["telegram"]


def _captured() -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    return seen, httpx.MockTransport(handler)


async def test_meta_webhooks_are_signed_over_the_exact_bytes_sent():
    seen, transport = _captured()
    firer = WebhookFirer(
        "http://gateway.test",
        meta_app_secret=APP_SECRET,
        telegram_secret_token="tg-secret",
        transport=transport,
    )
    wa_msg = whatsapp_message(sender="155500", text="Where is my order?", message_id="wamid.A")
    envelope = batch(
        whatsapp_update(phone_number_id="PN1", messages=[wa_msg]),
        whatsapp_update(
            phone_number_id="PN1", statuses=[whatsapp_status(recipient="155500", message_id="wamid.OUT")]
        ),
    )
    await firer.whatsapp(envelope)
    await firer.whatsapp(envelope)  # a duplicate delivery, byte for byte
    ig = instagram_update(
        ig_id="IG1",
        events=[
            instagram_message(ig_id="IG1", sender="igsid", text="hi"),
            instagram_echo(ig_id="IG1", recipient="igsid", text="ours"),
        ],
    )
    await firer.instagram(ig)
    await firer.telegram(telegram_update(chat_id=42, text="hello"), bot_id="9")
    await firer.aclose()

    for request in seen[:3]:
        expected = "sha256=" + hmac.new(APP_SECRET.encode(), request.content, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(request.headers["x-hub-signature-256"], expected)
    assert seen[0].url.path == "/webhooks/whatsapp" and seen[2].url.path == "/webhooks/instagram"
    assert seen[0].content == seen[1].content
    body = json.loads(seen[0].content)
    assert (
        len(body["entry"]) == 2
        and body["entry"][1]["changes"][0]["value"]["statuses"][0]["status"] == "delivered"
    )
    assert body["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"] == "Where is my order?"
    events = json.loads(seen[2].content)["entry"][0]["messaging"]
    assert events[1]["message"]["is_echo"] is True and events[1]["sender"]["id"] == "IG1"
    assert seen[3].headers["x-telegram-bot-api-secret-token"] == "tg-secret"
    assert seen[3].url.path == "/webhooks/telegram/9"
    assert json.loads(seen[3].content)["message"]["chat"]["id"] == 42
    # A tampered body no longer matches its signature.
    forged = seen[0].content.replace(b"Where", b"Wh3re")
    assert not hmac.compare_digest(
        seen[0].headers["x-hub-signature-256"],
        "sha256=" + hmac.new(APP_SECRET.encode(), forged, hashlib.sha256).hexdigest(),
    )


def test_server_stops_and_releases_its_port():
    server = SimulatorServer().start()
    url = server.url
    assert httpx.get(f"{url}/_sim/sent").json() == []
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/_sim/sent", timeout=1)
