"""scripts/smoke.py against a fake deployment (httpx.MockTransport): passes, fails loudly, signs right."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import httpx
import pytest

from common.channels.meta import verify_meta_signature
from tests.deploy.tools import REPO

SECRET = "app-secret-for-tests"
API_KEY = "ema_0123456789ab_" + "k" * 43


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMOKE_API_KEY", API_KEY)


def smoke() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smoke_script", REPO / "scripts" / "smoke.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["smoke_script"] = module
    spec.loader.exec_module(module)
    return module


def fake_deployment(*, citations: int = 1, ready: bool = True) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        if path == "/readyz":
            return httpx.Response(200 if ready else 503, json={"postgres": ready, "redis": True})
        if path == "/v1/messages/inbound":
            if request.headers.get("authorization") != f"Bearer {API_KEY}":
                return httpx.Response(401, json={"error": {"code": "unauthorized"}})
            body = json.loads(request.content)
            assert body["message_id"].startswith("smoke-")
            return httpx.Response(
                200,
                json={
                    "text": "You have 30 days.",
                    "citations": [{"chunk_id": "c", "source": "returns.md"}] * citations,
                    "escalated": False,
                    "duplicate": False,
                },
            )
        if path == "/webhooks/whatsapp":
            # The project's own verifier: the smoke signature must be what the gateway accepts.
            verify_meta_signature(headers=request.headers, body=request.content, secret=SECRET)
            return httpx.Response(200, json={"status": "ok", "accepted": 1, "duplicates": 0, "ignored": 0})
        return httpx.Response(404, json={"error": {"code": "not_found"}})

    return handler


def test_passes_against_a_healthy_deployment(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--base-url", "http://x", "--meta-app-secret", SECRET, "--whatsapp-phone-number-id", "123"]
    code = smoke().main(argv, transport=httpx.MockTransport(fake_deployment()))
    assert code == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert set(report["checks"]) == {"healthz", "readyz", "inbound_message", "whatsapp_webhook"}


def test_fails_when_the_reply_has_no_citations(capsys: pytest.CaptureFixture[str]) -> None:
    code = smoke().main(
        ["--base-url", "http://x"], transport=httpx.MockTransport(fake_deployment(citations=0))
    )
    assert code == 1
    assert "no citations" in capsys.readouterr().err


def test_fails_when_never_ready(capsys: pytest.CaptureFixture[str]) -> None:
    transport = httpx.MockTransport(fake_deployment(ready=False))
    code = smoke().main(["--base-url", "http://x", "--wait", "0"], transport=transport)
    assert code == 1
    assert "/readyz" in capsys.readouterr().err


def test_wrong_secret_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/webhooks/whatsapp":
            try:
                verify_meta_signature(headers=request.headers, body=request.content, secret=SECRET)
            except Exception:
                return httpx.Response(401, json={"error": {"code": "unauthorized"}})
        return fake_deployment()(request)

    argv = ["--base-url", "http://x", "--meta-app-secret", "wrong"]
    assert smoke().main(argv, transport=httpx.MockTransport(handler)) == 1
    assert "401" in capsys.readouterr().err


def test_says_which_key_to_set_when_the_api_refuses_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMOKE_API_KEY")
    code = smoke().main(["--base-url", "http://x"], transport=httpx.MockTransport(fake_deployment()))
    assert code == 1 and "SMOKE_API_KEY" in capsys.readouterr().err
