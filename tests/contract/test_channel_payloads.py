"""Recorded provider payloads (tests/fixtures/<channel>/*.json, shaped as the providers document them)
→ the events each adapter must produce: messages to record, or "ignored" with the reason."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from common.channels.base import ChannelEvent, IgnoredEvent, StatusEvent, sent_at
from common.channels.registry import ADAPTERS, get_adapter
from common.domain import Channel, MediaRef
from common.errors import InvalidInput, Unauthorized

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
WA = "106540352242922"
IG = "17841405822304914"
BOT = "7000000001"
WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA"


def msg(account: str, customer: str, mid: str, text: str, unsupported: str | None = None) -> ChannelEvent:
    return ChannelEvent(account, customer, mid, text, unsupported)


def media(account: str, customer: str, mid: str, text: str, ref: MediaRef) -> ChannelEvent:
    return ChannelEvent(account, customer, mid, text, media=ref)


def ignored(reason: str) -> tuple[str, str]:
    return ("ignored", reason)


def status(mid: str, kind: str, error: str | None = None) -> StatusEvent:
    return StatusEvent(WA, mid, kind, error)


STATUS_WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MEY3RkQ0QkVDQ0MxQjgxNDcA"


#: (channel, fixture) → expected events; ("ignored", substring of the reason) for skipped ones.
EXPECTED: dict[tuple[Channel, str], list[ChannelEvent | StatusEvent | tuple[str, str]]] = {
    (Channel.WHATSAPP, "text"): [
        msg(WA, "16505551234", f"{WAMID}1", "How long do I have to return an item?")
    ],
    (Channel.WHATSAPP, "batched"): [
        msg(WA, "16505551234", f"{WAMID}2", "Do you ship to Canada?"),
        msg(WA, "16505550000", f"{WAMID}3", "And how much is shipping?"),
        msg(WA, "16505551234", f"{WAMID}4", "Where is your store?"),
        status("wamid.OUT1", "delivered"),
    ],
    (Channel.WHATSAPP, "statuses"): [
        status(STATUS_WAMID, "sent"),
        status(STATUS_WAMID, "delivered"),
        status(STATUS_WAMID, "read"),
    ],
    (Channel.WHATSAPP, "status_failed"): [
        status(
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJGQUlMRUQ",
            "failed",
            "131047: Re-engagement message (Message failed to send because more than 24 hours have passed"
            " since the customer last replied to this number.)",
        )
    ],
    (Channel.WHATSAPP, "media"): [
        # A caption is the question; the picture is fetched for the agents.
        media(
            WA,
            "16505551234",
            "wamid.IMG1",
            "Is this tent in stock?",
            MediaRef(
                kind="image", ref="1003383421387256", mime_type="image/jpeg", caption="Is this tent in stock?"
            ),
        ),
        msg(WA, "16505551234", "wamid.STK1", "[unsupported: sticker]", "sticker"),
        media(
            WA,
            "16505551234",
            "wamid.LOC1",
            "[location: 37.483253479, -122.148422241, Main Office, 1 Hacker Way, Menlo Park, CA 94025]",
            MediaRef(
                kind="location",
                details={
                    "latitude": 37.483253479,
                    "longitude": -122.148422241,
                    "name": "Main Office",
                    "address": "1 Hacker Way, Menlo Park, CA 94025",
                },
            ),
        ),
    ],
    (Channel.WHATSAPP, "media_audio_video_document"): [
        media(
            WA,
            "16505551234",
            "wamid.VOICE1",
            "[voice note]",
            MediaRef(kind="audio", ref="2154398721563921", mime_type="audio/ogg; codecs=opus", voice=True),
        ),
        media(
            WA,
            "16505551234",
            "wamid.AUD1",
            "[audio]",
            MediaRef(kind="audio", ref="2154398721563922", mime_type="audio/mpeg"),
        ),
        media(
            WA,
            "16505551234",
            "wamid.VID1",
            "it makes this noise",
            MediaRef(
                kind="video", ref="2154398721563923", mime_type="video/mp4", caption="it makes this noise"
            ),
        ),
        media(
            WA,
            "16505551234",
            "wamid.DOC1",
            "[document: invoice-1042.pdf]",
            MediaRef(
                kind="document",
                ref="2154398721563924",
                mime_type="application/pdf",
                filename="invoice-1042.pdf",
            ),
        ),
    ],
    (Channel.WHATSAPP, "reaction"): [ignored("reaction")],
    (Channel.WHATSAPP, "interactive_reply"): [msg(WA, "16505551234", "wamid.BTN1", "Track my order")],
    (Channel.INSTAGRAM, "text"): [
        msg(
            IG,
            "6143275139104912",
            "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDA1ODIyMzA0OTE0OjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI1OTg0N"
            "zY1MjE5ODc3NjQ2NDo2OTg3OTk5MDYzMjQ1MzI5OTIzMjM3NDY1OTQ5NjM4NTI4AA",
            "What is your warranty?",
        )
    ],
    (Channel.INSTAGRAM, "batched"): [
        msg(IG, "6143275139104912", "ig.mid.A1", "Hi, do you ship to Spain?"),
        msg(IG, "6143275139104912", "ig.mid.A2", "Also, returns?"),
        msg(IG, "7000000000000002", "ig.mid.B1", "Opening hours?"),
    ],
    (Channel.INSTAGRAM, "echo"): [ignored("echo")],
    (Channel.INSTAGRAM, "reaction"): [ignored("reaction")],
    (Channel.INSTAGRAM, "read"): [StatusEvent(IG, "mid.SIM7", "read")],
    (Channel.INSTAGRAM, "deleted"): [ignored("deleted")],
    (Channel.INSTAGRAM, "attachment_image"): [
        media(
            IG,
            "6143275139104912",
            "ig.mid.IMG1",
            "[image]",
            MediaRef(
                kind="image", ref="https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1&signature=x"
            ),
        )
    ],
    (Channel.INSTAGRAM, "attachments_audio_video_file_share"): [
        media(
            IG,
            "6143275139104912",
            "ig.mid.AUD1",
            "[voice note]",
            MediaRef(
                kind="audio",
                ref="https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=2&signature=y",
                voice=True,
            ),
        ),
        media(
            IG,
            "6143275139104912",
            "ig.mid.VID1",
            "does it come in blue?",
            MediaRef(
                kind="video",
                ref="https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=3&signature=z",
                caption="does it come in blue?",
            ),
        ),
        media(
            IG,
            "6143275139104912",
            "ig.mid.FILE1",
            "[document]",
            MediaRef(
                kind="document", ref="https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=4&signature=w"
            ),
        ),
        msg(IG, "6143275139104912", "ig.mid.SHARE1", "[unsupported: share]", "share"),
    ],
    (Channel.TELEGRAM, "message"): [
        msg(BOT, "111222333", f"{BOT}:912345001", "Do you have a store in Lisbon?")
    ],
    (Channel.TELEGRAM, "edited_message"): [ignored("edited_message")],
    (Channel.TELEGRAM, "channel_post"): [ignored("channel_post")],
    # A tap carries its callback id: the gateway answers it so the button's spinner stops.
    (Channel.TELEGRAM, "callback_query"): [
        ChannelEvent(BOT, "111222333", f"{BOT}:912345007", "track", callback_id="4382bfdwdsb323b2d9")
    ],
    (Channel.TELEGRAM, "callback_query_button"): [
        ChannelEvent(BOT, "111222333", f"{BOT}:912345008", "Yes", callback_id="4382bfdwdsb323b2e0")
    ],
    (Channel.TELEGRAM, "group_message"): [ignored("group chats")],
    (Channel.TELEGRAM, "photo"): [
        # The largest size of the photo; Telegram sends photos as JPEG.
        media(
            BOT,
            "111222333",
            f"{BOT}:912345004",
            "this one?",
            MediaRef(
                kind="image",
                ref="AgACAgQAAxkBAAIC",
                mime_type="image/jpeg",
                declared_bytes=45678,
                caption="this one?",
            ),
        )
    ],
    (Channel.TELEGRAM, "location"): [
        media(
            BOT,
            "111222333",
            f"{BOT}:912345005",
            "[location: 38.7223, -9.1393]",
            MediaRef(kind="location", details={"latitude": 38.7223, "longitude": -9.1393}),
        )
    ],
    (Channel.TELEGRAM, "venue"): [
        media(
            BOT,
            "111222333",
            f"{BOT}:912345014",
            "[location: 38.7105, -9.1366, Rossio store, Praca Dom Pedro IV]",
            MediaRef(
                kind="location",
                details={
                    "latitude": 38.7105,
                    "longitude": -9.1366,
                    "name": "Rossio store",
                    "address": "Praca Dom Pedro IV",
                },
            ),
        )
    ],
    (Channel.TELEGRAM, "voice"): [
        media(
            BOT,
            "111222333",
            f"{BOT}:912345011",
            "[voice note]",
            MediaRef(
                kind="audio", ref="AwACAgQAAxkBAAIV", mime_type="audio/ogg", declared_bytes=9021, voice=True
            ),
        )
    ],
    (Channel.TELEGRAM, "document"): [
        media(
            BOT,
            "111222333",
            f"{BOT}:912345012",
            "my receipt",
            MediaRef(
                kind="document",
                ref="BQACAgQAAxkBAAIW",
                mime_type="application/pdf",
                filename="receipt.pdf",
                declared_bytes=120433,
                caption="my receipt",
            ),
        )
    ],
    (Channel.TELEGRAM, "video_large"): [
        media(
            BOT,
            "111222333",
            f"{BOT}:912345013",
            "[video]",
            MediaRef(kind="video", ref="BAACAgQAAxkBAAIX", mime_type="video/mp4", declared_bytes=25165824),
        )
    ],
    (Channel.TELEGRAM, "sticker"): [
        msg(BOT, "111222333", f"{BOT}:912345015", "[unsupported: sticker]", "sticker")
    ],
}


def load(channel: Channel, name: str) -> object:
    return json.loads((FIXTURES / channel.value / f"{name}.json").read_text())


def test_every_fixture_has_an_expectation() -> None:
    on_disk = {(Channel(p.parent.name), p.stem) for p in FIXTURES.glob("*/*.json")}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize(("channel", "name"), sorted(EXPECTED), ids=lambda v: str(v))
def test_fixture_parses_to_expected_events(channel: Channel, name: str) -> None:
    account = BOT if channel is Channel.TELEGRAM else None
    events = get_adapter(channel).parse(load(channel, name), account_id=account)
    expected = EXPECTED[(channel, name)]
    assert len(events) == len(expected), events
    for event, want in zip(events, expected, strict=True):
        if isinstance(event, ChannelEvent):
            # The provider's sending time: every WhatsApp and Instagram message has one (checked below).
            assert (event.sent_at is not None) == (channel is not Channel.TELEGRAM), event
            event = dataclasses.replace(event, sent_at=None)
        if isinstance(want, ChannelEvent | StatusEvent):
            assert event == want
        else:
            assert isinstance(event, IgnoredEvent), event
            assert want[1] in event.reason


@pytest.mark.parametrize(
    ("channel", "payload"),
    [
        (Channel.WHATSAPP, {"object": "whatsapp_business_account"}),
        (Channel.WHATSAPP, {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": "x"}]}),
        (Channel.WHATSAPP, [1, 2]),
        (Channel.INSTAGRAM, {"object": "instagram", "entry": [{"id": "1", "messaging": [{"sender": {}}]}]}),
        (Channel.TELEGRAM, {"message": {"text": "no update id"}}),
        (Channel.TELEGRAM, {"update_id": "x"}),
    ],
)
def test_bad_shapes_are_invalid_input(channel: Channel, payload: object) -> None:
    with pytest.raises(InvalidInput) as info:
        get_adapter(channel).parse(payload, account_id=BOT)
    assert info.value.status_code == 400 and info.value.details["errors"]


@pytest.mark.parametrize(
    ("channel", "name", "sent"),
    [
        (Channel.WHATSAPP, "text", datetime.fromtimestamp(1749416383, UTC)),  # seconds, as a string
        (Channel.INSTAGRAM, "attachment_image", datetime.fromtimestamp(1569262485.349, UTC)),  # millis
    ],
)
def test_a_message_carries_when_the_customer_sent_it(channel: Channel, name: str, sent: datetime) -> None:
    [event] = get_adapter(channel).parse(load(channel, name))
    assert isinstance(event, ChannelEvent) and event.sent_at == sent


@pytest.mark.parametrize("value", [None, "", "soon", -5, 0, 10**30])
def test_an_absurd_provider_timestamp_is_no_time(value: object) -> None:
    assert sent_at(value) is None


def test_other_objects_are_ignored() -> None:
    assert isinstance(get_adapter(Channel.WHATSAPP).parse({"object": "page", "entry": []})[0], IgnoredEvent)
    assert isinstance(get_adapter(Channel.INSTAGRAM).parse({"object": "page", "entry": []})[0], IgnoredEvent)


def test_meta_signature_is_hmac_sha256_of_the_raw_body() -> None:
    body = (FIXTURES / "whatsapp" / "text.json").read_bytes()
    good = "sha256=" + hmac.new(b"app-secret", body, hashlib.sha256).hexdigest()
    for channel in (Channel.WHATSAPP, Channel.INSTAGRAM):
        adapter = ADAPTERS[channel]
        adapter.verify(headers={"x-hub-signature-256": good}, body=body, secret="app-secret")
        for headers, secret in [
            ({"x-hub-signature-256": good}, "other-secret"),
            ({"x-hub-signature-256": good}, None),
            ({}, "app-secret"),
            ({"x-hub-signature-256": good.replace("sha256=", "sha1=")}, "app-secret"),
        ]:
            with pytest.raises(Unauthorized):
                adapter.verify(headers=headers, body=body, secret=secret)
        with pytest.raises(Unauthorized):
            adapter.verify(headers={"x-hub-signature-256": good}, body=body + b" ", secret="app-secret")


def test_telegram_secret_header() -> None:
    adapter = ADAPTERS[Channel.TELEGRAM]
    adapter.verify(headers={"x-telegram-bot-api-secret-token": "s3cr3t"}, body=b"{}", secret="s3cr3t")
    for headers, secret in [
        ({"x-telegram-bot-api-secret-token": "nope"}, "s3cr3t"),
        ({}, "s3cr3t"),
        ({}, None),
    ]:
        with pytest.raises(Unauthorized):
            adapter.verify(headers=headers, body=b"{}", secret=secret)
