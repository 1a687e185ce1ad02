"""Each channel's media fetch on its provider's wire format, and the size limit (``httpx.MockTransport``
plays the provider)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from pydantic import SecretStr

from common.channels import instagram, telegram, whatsapp
from common.channels.media import MediaFetchError, MediaTooLarge, RetryableMediaFetchError
from common.config import ChannelSecrets
from common.domain import ChannelRoute, MediaRef

SECRETS = ChannelSecrets(
    meta_access_token=SecretStr("default-token"),
    telegram_bot_token=SecretStr("1:default-bot"),
    meta_graph_url="http://graph.test",
    telegram_api_url="http://tg.test",
)
DEFAULTS = ChannelRoute(brand_id=uuid.uuid4(), enabled=True)  # no credentials of its own
OWN = ChannelRoute(
    brand_id=uuid.uuid4(),
    enabled=True,
    credentials={"access_token": SecretStr("own-token"), "bot_token": SecretStr("2:own-bot")},
)


def client(handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_whatsapp_resolves_the_media_id_then_downloads_with_the_connections_token() -> None:
    seen: list[tuple[str, str]] = []

    def graph(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("authorization", "")))
        if request.url.path == "/v21.0/MEDIA1":
            return httpx.Response(
                200,
                json={
                    "url": "http://lookaside.test/f?mid=1",
                    "mime_type": "image/jpeg",
                    "file_size": "5",
                    "id": "MEDIA1",
                },
            )
        return httpx.Response(200, content=b"\xff\xd8abc", headers={"content-type": "image/jpeg"})

    async with client(graph) as c:
        got = await whatsapp.fetch_media(
            c, secrets=SECRETS, route=OWN, media=MediaRef(kind="image", ref="MEDIA1"), max_bytes=100
        )
    assert got.data == b"\xff\xd8abc" and got.mime_type == "image/jpeg" and len(got.sha256) == 64
    assert seen == [
        ("http://graph.test/v21.0/MEDIA1", "Bearer own-token"),
        ("http://lookaside.test/f?mid=1", "Bearer own-token"),
    ]


async def test_a_declared_size_over_the_limit_is_refused_before_downloading() -> None:
    def graph(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v21.0/BIG", "the file itself must not be requested"
        return httpx.Response(200, json={"url": "http://lookaside.test/big", "file_size": "9000"})

    async with client(graph) as c:
        with pytest.raises(MediaTooLarge, match="limit") as info:
            await whatsapp.fetch_media(
                c, secrets=SECRETS, route=DEFAULTS, media=MediaRef(kind="video", ref="BIG"), max_bytes=1000
            )
    assert info.value.details == {"bytes": 9000, "max_bytes": 1000}


async def test_an_undeclared_size_is_counted_and_cut_off() -> None:
    async with client(lambda r: httpx.Response(200, content=b"x" * 5000)) as c:
        with pytest.raises(MediaTooLarge):
            await instagram.fetch_media(
                c,
                secrets=SECRETS,
                route=DEFAULTS,
                media=MediaRef(kind="video", ref="http://cdn.test/v"),
                max_bytes=1000,
            )


async def test_telegram_getfile_then_the_file_path_with_the_bot_token() -> None:
    seen: list[str] = []

    def bot_api(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path.endswith("/getFile"):
            return httpx.Response(
                200,
                json={
                    "ok": True,
                    "result": {"file_id": "F", "file_size": 3, "file_path": "voice/file_7.oga"},
                },
            )
        return httpx.Response(200, content=b"Ogg")

    ref = MediaRef(kind="audio", ref="F", mime_type="audio/ogg", voice=True)
    async with client(bot_api) as c:
        got = await telegram.fetch_media(c, secrets=SECRETS, route=DEFAULTS, media=ref, max_bytes=100)
    assert got.data == b"Ogg" and got.mime_type == "audio/ogg"
    assert seen == [
        "http://tg.test/bot1:default-bot/getFile",
        "http://tg.test/file/bot1:default-bot/voice/file_7.oga",
    ]


async def test_telegram_too_big_and_provider_failures_are_typed_without_the_token() -> None:
    def too_big(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400, json={"ok": False, "error_code": 400, "description": "Bad Request: file is too big"}
        )

    async with client(too_big) as c:
        with pytest.raises(MediaTooLarge, match="20 MB"):
            await telegram.fetch_media(
                c, secrets=SECRETS, route=OWN, media=MediaRef(kind="video", ref="F"), max_bytes=10**9
            )

    async with client(lambda r: httpx.Response(502)) as c:
        with pytest.raises(RetryableMediaFetchError) as info:
            await telegram.fetch_media(
                c, secrets=SECRETS, route=OWN, media=MediaRef(kind="video", ref="F"), max_bytes=100
            )
    assert "own-bot" not in info.value.message

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async with client(unreachable) as c:
        with pytest.raises(RetryableMediaFetchError, match="unreachable"):
            await whatsapp.fetch_media(
                c, secrets=SECRETS, route=OWN, media=MediaRef(kind="image", ref="M"), max_bytes=100
            )


async def test_a_connection_with_credentials_never_falls_back_to_the_deployments() -> None:
    bare = ChannelRoute(brand_id=uuid.uuid4(), enabled=True, credentials={"app_secret": SecretStr("s")})
    async with client(lambda r: pytest.fail("nothing may be requested without a token")) as c:
        with pytest.raises(MediaFetchError, match="no access_token"):
            await whatsapp.fetch_media(
                c, secrets=SECRETS, route=bare, media=MediaRef(kind="image", ref="M"), max_bytes=100
            )
