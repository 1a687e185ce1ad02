"""Register the gateway's Telegram webhook: ``python -m serve_apps.telegram_webhook --url URL``.

``URL`` is the gateway's public HTTPS base (e.g. ``https://chat.example.com``); the webhook becomes
``URL/webhooks/telegram/{bot_id}`` where ``bot_id`` is the number before ``:`` in the bot token.
The bot token (``CHANNELS__TELEGRAM_BOT_TOKEN``) and secret (``CHANNELS__TELEGRAM_SECRET_TOKEN``) come
from settings, the Bot API base from ``CHANNELS__TELEGRAM_API_URL``. Only ``message`` updates are
requested: every other update type is ignored by the webhook anyway.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

import httpx

from common.channels.telegram import bot_id_of
from common.config import ChannelSecrets, get_settings
from common.errors import InvalidInput

#: Telegram accepts 1-256 characters A-Z, a-z, 0-9, _ and - as a secret token.
SECRET_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def webhook_url(base_url: str, bot_id: str) -> str:
    """Where Telegram must POST this bot's updates."""
    return f"{base_url.rstrip('/')}/webhooks/telegram/{bot_id}"


def set_webhook(
    channels: ChannelSecrets,
    *,
    base_url: str,
    drop_pending_updates: bool = False,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """Call ``setWebhook``; returns Telegram's JSON answer. Raises InvalidInput on bad settings."""
    if channels.telegram_bot_token is None or channels.telegram_secret_token is None:
        raise InvalidInput("set CHANNELS__TELEGRAM_BOT_TOKEN and CHANNELS__TELEGRAM_SECRET_TOKEN")
    token = channels.telegram_bot_token.get_secret_value()
    secret = channels.telegram_secret_token.get_secret_value()
    if not SECRET_TOKEN_SHAPE.match(secret):
        raise InvalidInput("the secret token must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
    if not base_url.startswith("https://"):
        raise InvalidInput("Telegram only delivers webhooks to https:// URLs")
    body = {
        "url": webhook_url(base_url, bot_id_of(token)),
        "secret_token": secret,
        "allowed_updates": ["message"],
        "drop_pending_updates": drop_pending_updates,
    }
    api = f"{channels.telegram_api_url.rstrip('/')}/bot{token}/setWebhook"
    with httpx.Client(transport=transport, timeout=10.0) as client:
        response = client.post(api, json=body)
    answer: dict[str, Any] = response.json()
    if response.status_code != 200 or not answer.get("ok"):
        raise InvalidInput("Telegram refused setWebhook", details={"description": answer.get("description")})
    return answer


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints the registered URL (never the token or secret)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True, help="public https base URL of the gateway")
    parser.add_argument("--drop-pending-updates", action="store_true")
    args = parser.parse_args(argv)
    channels = get_settings().channels
    try:
        set_webhook(channels, base_url=args.url, drop_pending_updates=args.drop_pending_updates)
    except (InvalidInput, httpx.HTTPError, ValueError) as exc:
        sys.stderr.write(f"setWebhook failed: {exc}\n")
        return 1
    token = channels.telegram_bot_token
    bot_id = bot_id_of(token.get_secret_value()) if token else "?"
    sys.stdout.write(f"webhook set: {webhook_url(args.url, bot_id)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
