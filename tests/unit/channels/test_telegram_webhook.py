"""``python -m serve_apps.telegram_webhook``: the setWebhook call it makes (httpx.MockTransport)."""

from __future__ import annotations

import json

import httpx
import pytest

from common.config import ChannelSecrets
from common.errors import InvalidInput
from serve_apps.telegram_webhook import set_webhook

TOKEN = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


def channels(**overrides) -> ChannelSecrets:
    values = {
        "telegram_bot_token": TOKEN,
        "telegram_secret_token": "s3cr3t-Token_1",
        "telegram_api_url": "https://tg.test",
    }
    return ChannelSecrets(**{**values, **overrides})


def test_set_webhook_posts_url_secret_and_allowed_updates() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True, "result": True, "description": "Webhook was set"})

    answer = set_webhook(
        channels(), base_url="https://gw.example.com/", transport=httpx.MockTransport(handler)
    )
    assert answer["ok"] is True
    [request] = seen
    assert str(request.url) == f"https://tg.test/bot{TOKEN}/setWebhook"
    assert json.loads(request.content) == {
        "url": "https://gw.example.com/webhooks/telegram/7000000001",
        "secret_token": "s3cr3t-Token_1",
        "allowed_updates": ["message"],
        "drop_pending_updates": False,
    }


def test_set_webhook_refusals() -> None:
    refused = httpx.MockTransport(lambda r: httpx.Response(400, json={"ok": False, "description": "bad"}))
    with pytest.raises(InvalidInput) as info:
        set_webhook(channels(), base_url="https://gw", transport=refused)
    assert info.value.details == {"description": "bad"}
    never = httpx.MockTransport(lambda r: pytest.fail("must not call Telegram"))
    for bad, url in [
        (channels(telegram_secret_token="has space"), "https://gw"),
        (channels(telegram_bot_token="no-colon"), "https://gw"),
        (channels(telegram_secret_token=None), "https://gw"),
        (channels(), "http://insecure"),
    ]:
        with pytest.raises(InvalidInput):
            set_webhook(bad, base_url=url, transport=never)
