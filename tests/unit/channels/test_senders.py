"""Provider senders against httpx.MockTransport: exact wire format, splitting, error classification."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from pydantic import SecretStr

from common.channels.base import RecipientConfig
from common.channels.http import parse_retry_after
from common.channels.instagram import InstagramSender
from common.channels.splitting import split_text
from common.channels.telegram import TelegramSender
from common.channels.whatsapp import WhatsAppSender
from common.config import ChannelSecrets
from common.domain import Channel
from common.errors import PermanentSendError, RetryableSendError
from common.schemas import OutboundPayload

SECRETS = ChannelSecrets(
    meta_access_token=SecretStr("meta-token"),
    meta_graph_url="https://graph.test",
    meta_graph_version="v21.0",
    telegram_bot_token=SecretStr("123:tg-secret"),
    telegram_api_url="https://tg.test",
)


def _payload(
    channel: Channel, text: str = "Thirty days.", in_reply_to: str | None = "wamid.IN1"
) -> OutboundPayload:
    return OutboundPayload(
        message_id=uuid.uuid4(),
        conversation_id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        brand_id=uuid.uuid4(),
        channel=channel,
        customer_id="15550001111" if channel is not Channel.TELEGRAM else "4242",
        in_reply_to=in_reply_to,
        text=text,
    )


class Recorder:
    """A MockTransport handler that records requests and answers from a script."""

    def __init__(self, *responses: httpx.Response) -> None:
        self.requests: list[httpx.Request] = []
        self._responses = list(responses)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self._responses) > 1:
            return self._responses.pop(0)
        return self._responses[0]

    def bodies(self) -> list[dict]:
        return [json.loads(r.content) for r in self.requests]


def _wa_ok(i: int = 1) -> httpx.Response:
    return httpx.Response(
        200, json={"messaging_product": "whatsapp", "contacts": [], "messages": [{"id": f"wamid.OUT{i}"}]}
    )


def _client(recorder: Recorder) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(recorder))


async def test_whatsapp_request_shape():
    rec = Recorder(_wa_ok())
    async with _client(rec) as client:
        sender = WhatsAppSender(client=client, secrets=SECRETS)
        result = await sender.send(
            _payload(Channel.WHATSAPP), recipient_config=RecipientConfig(Channel.WHATSAPP, "PNID1")
        )
    assert result.provider_message_id == "wamid.OUT1"
    [request] = rec.requests
    assert request.method == "POST"
    assert str(request.url) == "https://graph.test/v21.0/PNID1/messages"
    assert request.headers["authorization"] == "Bearer meta-token"
    assert json.loads(request.content) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "15550001111",
        "type": "text",
        "text": {"body": "Thirty days.", "preview_url": False},
        "context": {"message_id": "wamid.IN1"},
    }


async def test_instagram_request_shape():
    rec = Recorder(httpx.Response(200, json={"recipient_id": "IGSID", "message_id": "mid.OUT"}))
    async with _client(rec) as client:
        result = await InstagramSender(client=client, secrets=SECRETS).send(
            _payload(Channel.INSTAGRAM), recipient_config=RecipientConfig(Channel.INSTAGRAM, "IG1")
        )
    assert result.provider_message_id == "mid.OUT"
    [request] = rec.requests
    assert str(request.url) == "https://graph.test/v21.0/IG1/messages"
    assert request.headers["authorization"] == "Bearer meta-token"
    assert json.loads(request.content) == {
        "recipient": {"id": "15550001111"},
        "message": {"text": "Thirty days."},
    }


async def test_telegram_request_shape_and_reply_id():
    rec = Recorder(httpx.Response(200, json={"ok": True, "result": {"message_id": 77, "chat": {"id": 4242}}}))
    async with _client(rec) as client:
        result = await TelegramSender(client=client, secrets=SECRETS).send(
            _payload(Channel.TELEGRAM, in_reply_to="15"),
            recipient_config=RecipientConfig(Channel.TELEGRAM, "123"),
        )
    assert result.provider_message_id == "77"
    [request] = rec.requests
    assert str(request.url) == "https://tg.test/bot123:tg-secret/sendMessage"
    assert json.loads(request.content) == {
        "chat_id": "4242",
        "text": "Thirty days.",
        "reply_parameters": {"message_id": 15, "allow_sending_without_reply": True},
    }


async def test_long_reply_split_and_sent_in_order_with_context_on_first_part_only():
    sentence = "This sentence is exactly forty chars ok. "
    text = (sentence * 60).strip()  # ~2400 characters
    rec = Recorder(
        *[httpx.Response(200, json={"recipient_id": "x", "message_id": f"mid.{i}"}) for i in range(5)]
    )
    async with _client(rec) as client:
        result = await InstagramSender(client=client, secrets=SECRETS).send(
            _payload(Channel.INSTAGRAM, text=text), recipient_config=RecipientConfig(Channel.INSTAGRAM, "IG1")
        )
    parts = [b["message"]["text"] for b in rec.bodies()]
    assert len(parts) == 3 and result.parts == 3
    assert all(len(p) <= 1000 for p in parts)
    assert all(p.endswith(".") for p in parts)  # cut at sentence ends
    assert " ".join(parts) == text
    assert result.provider_message_ids == ("mid.0", "mid.1", "mid.2")


async def test_whatsapp_split_quotes_only_first_part():
    text = ("word " * 1000).strip()  # 4999 characters, no sentence end
    rec = Recorder(_wa_ok(1), _wa_ok(2))
    async with _client(rec) as client:
        await WhatsAppSender(client=client, secrets=SECRETS).send(
            _payload(Channel.WHATSAPP, text=text), recipient_config=RecipientConfig(Channel.WHATSAPP, "P")
        )
    bodies = rec.bodies()
    assert [("context" in b) for b in bodies] == [True, False]
    assert all(len(b["text"]["body"]) <= 4096 for b in bodies)
    assert " ".join(b["text"]["body"] for b in bodies) == text


def test_split_text_boundaries():
    assert split_text("short", limit=10) == ["short"]
    assert split_text("aaaa bbbb cccc", limit=9) == ["aaaa bbbb", "cccc"]
    assert split_text("x" * 25, limit=10) == ["x" * 10, "x" * 10, "x" * 5]  # one long word: hard cut
    assert split_text("One two. Three four five six.", limit=12) == ["One two.", "Three four", "five six."]


@pytest.mark.parametrize(
    ("sender_cls", "channel", "response"),
    [
        (
            WhatsAppSender,
            Channel.WHATSAPP,
            httpx.Response(429, headers={"Retry-After": "7"}, json={"error": {"code": 80007}}),
        ),
        (
            InstagramSender,
            Channel.INSTAGRAM,
            httpx.Response(429, headers={"Retry-After": "7"}, json={"error": {"code": 4}}),
        ),
        (
            TelegramSender,
            Channel.TELEGRAM,
            httpx.Response(
                429,
                json={
                    "ok": False,
                    "error_code": 429,
                    "description": "Too Many Requests: retry after 7",
                    "parameters": {"retry_after": 7},
                },
            ),
        ),
    ],
)
async def test_429_is_retryable_with_retry_after(sender_cls, channel, response):
    rec = Recorder(response)
    async with _client(rec) as client:
        with pytest.raises(RetryableSendError) as caught:
            await sender_cls(client=client, secrets=SECRETS).send(
                _payload(channel), recipient_config=RecipientConfig(channel, "A")
            )
    assert caught.value.retry_after_s == 7
    assert caught.value.details["retry_after_s"] == 7  # what common.retry reads
    assert caught.value.retryable


@pytest.mark.parametrize(
    ("sender_cls", "channel", "response"),
    [
        (
            WhatsAppSender,
            Channel.WHATSAPP,
            httpx.Response(400, json={"error": {"code": 131030, "message": "Recipient not allowed"}}),
        ),
        (
            InstagramSender,
            Channel.INSTAGRAM,
            httpx.Response(400, json={"error": {"code": 100, "message": "bad"}}),
        ),
        (
            TelegramSender,
            Channel.TELEGRAM,
            httpx.Response(
                400, json={"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
            ),
        ),
    ],
)
async def test_400_is_permanent_with_reason(sender_cls, channel, response):
    rec = Recorder(response)
    async with _client(rec) as client:
        with pytest.raises(PermanentSendError) as caught:
            await sender_cls(client=client, secrets=SECRETS).send(
                _payload(channel), recipient_config=RecipientConfig(channel, "A")
            )
    assert not caught.value.retryable
    assert "400" in caught.value.reason


async def test_meta_throttle_code_in_400_is_retryable_and_5xx_too():
    for response in (
        httpx.Response(400, json={"error": {"code": 131056, "message": "pair rate limit"}}),
        httpx.Response(503, text="upstream down"),
    ):
        async with _client(Recorder(response)) as client:
            with pytest.raises(RetryableSendError):
                await WhatsAppSender(client=client, secrets=SECRETS).send(
                    _payload(Channel.WHATSAPP), recipient_config=RecipientConfig(Channel.WHATSAPP, "P")
                )


async def test_network_errors_are_retryable_and_never_leak_the_token():
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(boom)) as client:
        with pytest.raises(RetryableSendError) as caught:
            await TelegramSender(client=client, secrets=SECRETS).send(
                _payload(Channel.TELEGRAM), recipient_config=RecipientConfig(Channel.TELEGRAM, "123")
            )
    assert "tg-secret" not in str(caught.value)


async def test_failure_mid_split_reports_progress_and_resume_skips_sent_parts():
    text = ("word " * 1000).strip()
    rec = Recorder(_wa_ok(1), httpx.Response(500, json={"error": {"code": 2}}))
    async with _client(rec) as client:
        sender = WhatsAppSender(client=client, secrets=SECRETS)
        payload = _payload(Channel.WHATSAPP, text=text)
        with pytest.raises(RetryableSendError) as caught:
            await sender.send(payload, recipient_config=RecipientConfig(Channel.WHATSAPP, "P"))
        assert caught.value.parts_sent == 1
        assert caught.value.provider_message_ids == ("wamid.OUT1",)
    rec2 = Recorder(_wa_ok(2))
    async with _client(rec2) as client:
        result = await WhatsAppSender(client=client, secrets=SECRETS).send(
            payload, recipient_config=RecipientConfig(Channel.WHATSAPP, "P"), start_part=1
        )
    assert len(rec2.requests) == 1 and result.provider_message_ids == ("wamid.OUT2",)
    assert "context" not in rec2.bodies()[0]


async def test_missing_token_is_permanent():
    async with _client(Recorder(_wa_ok())) as client:
        with pytest.raises(PermanentSendError, match="META_ACCESS_TOKEN"):
            await WhatsAppSender(client=client, secrets=ChannelSecrets()).send(
                _payload(Channel.WHATSAPP), recipient_config=RecipientConfig(Channel.WHATSAPP, "P")
            )


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("nonsense") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a past date means now


async def test_telegram_update_key_is_not_taken_for_a_message_id():
    rec = Recorder(httpx.Response(200, json={"ok": True, "result": {"message_id": 1}}))
    async with _client(rec) as client:
        await TelegramSender(client=client, secrets=SECRETS).send(
            _payload(Channel.TELEGRAM, in_reply_to="777:9001"),
            recipient_config=RecipientConfig(Channel.TELEGRAM, "777"),
        )
    assert rec.bodies() == [{"chat_id": "4242", "text": "Thirty days."}]
