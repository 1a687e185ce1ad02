"""``python -m serve_apps.simulator``: the provider SIMULATOR.

* ``serve`` (default): run the simulator in the foreground (``--host``, ``--port``).
* ``demo --gateway URL --sim-port 8900``: start the simulator, send one WhatsApp, one Instagram and one
  Telegram question to the gateway as signed webhooks, then a WhatsApp **voice note** (the simulator
  holds its audio; its SIMULATED transcription endpoint answers ``--voice-question`` for those bytes),
  wait for the replies to reach the simulator, print them. ``--no-voice-note`` leaves the voice note out.
  Then two WhatsApp journeys (:mod:`serve_apps.simulator.scenarios`; ``--no-journeys`` skips them): a
  ticket asked for (``--ticket-request``) and confirmed by a tap on the reply's "Yes" button, opened in
  the SIMULATED helpdesk (``ACTIONS__HELPDESK_BASE_URL``, which ``make run`` points at it); and a
  question delivered 25 hours after the customer sent it, answered as the connection's template.
  The gateway must send through the simulator (``CHANNELS__META_GRAPH_URL`` and
  ``CHANNELS__TELEGRAM_API_URL`` = ``http://127.0.0.1:<sim-port>``; ``MEDIA__TRANSCRIPTION_URL`` =
  ``http://127.0.0.1:<sim-port>/v1``, which ``make run`` sets) and its brand must own the accounts named
  by ``--phone-number-id``, ``--ig-id`` and the bot token.

Webhook secrets come from settings (``CHANNELS__META_APP_SECRET``, ``CHANNELS__TELEGRAM_SECRET_TOKEN``),
the same ones the gateway verifies with. A brand's own connection is tried with ``--channels whatsapp``,
its URL (``--whatsapp-path /webhooks/meta/{app_id}``) and its app secret (``--meta-app-secret-file``).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time

from common.config import get_settings
from serve_apps.simulator.scenarios import TapJourney, late_message, ticket_by_tap, wait_reply
from serve_apps.simulator.server import SimulatorServer
from serve_apps.simulator.state import SentMessage, SimChannel
from serve_apps.simulator.webhooks import (
    WebhookFirer,
    WebhookPaths,
    instagram_message,
    instagram_update,
    telegram_update,
    whatsapp_media,
    whatsapp_message,
    whatsapp_update,
)

CHANNELS: tuple[SimChannel, ...] = ("whatsapp", "instagram", "telegram")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serve_apps.simulator", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the simulator")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8900)
    demo = sub.add_parser("demo", help="fire three webhooks at a gateway and print the replies")
    demo.add_argument("--gateway", default="http://127.0.0.1:8000")
    demo.add_argument("--sim-port", type=int, default=8900)
    demo.add_argument("--phone-number-id", default="SIM-PHONE-1")
    demo.add_argument("--ig-id", default="SIM-IG-1")
    demo.add_argument("--telegram-chat-id", type=int, default=4242)
    demo.add_argument("--whatsapp-path", default=WebhookPaths.whatsapp)
    demo.add_argument("--instagram-path", default=WebhookPaths.instagram)
    demo.add_argument("--telegram-path", default=WebhookPaths.telegram)
    demo.add_argument("--question", default="How long do I have to return an item?")
    demo.add_argument(
        "--channels", default=",".join(CHANNELS), help="comma-separated subset of whatsapp,instagram,telegram"
    )
    demo.add_argument(
        "--meta-app-secret-file", help="sign Meta webhooks with this app secret (a connection's)"
    )
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the replies")
    demo.add_argument("--voice-question", default="Do you ship to Canada?", help="what the voice note says")
    demo.add_argument("--no-voice-note", action="store_true", help="send no WhatsApp voice note")
    demo.add_argument(
        "--ticket-request",
        default="My tent zipper broke on the first night. Please open a ticket.",
        help="what the customer asking for a ticket writes",
    )
    demo.add_argument(
        "--no-journeys", action="store_true", help="no ticket-by-tap and no reply-outside-the-window steps"
    )
    return parser


def _channels(args: argparse.Namespace) -> tuple[SimChannel, ...]:
    wanted = {c.strip() for c in args.channels.split(",") if c.strip()}
    unknown = wanted - set(CHANNELS)
    if unknown or not wanted:
        raise SystemExit(f"--channels takes a subset of {','.join(CHANNELS)}")
    return tuple(c for c in CHANNELS if c in wanted)


def _firer(args: argparse.Namespace, channels: tuple[SimChannel, ...]) -> WebhookFirer:
    """A webhook firer signing with the gateway's secrets (from settings, or ``--meta-app-secret-file``)."""
    settings = get_settings().channels
    meta = settings.meta_app_secret.get_secret_value() if settings.meta_app_secret else None
    if args.meta_app_secret_file:
        with open(args.meta_app_secret_file, encoding="utf-8") as handle:
            meta = handle.read().strip()
    tg = settings.telegram_secret_token
    bot = settings.telegram_bot_token
    needs_tg = "telegram" in channels
    if (meta is None and set(channels) - {"telegram"}) or (needs_tg and (tg is None or bot is None)):
        raise SystemExit(
            "set CHANNELS__META_APP_SECRET (or --meta-app-secret-file), CHANNELS__TELEGRAM_SECRET_TOKEN and"
            " CHANNELS__TELEGRAM_BOT_TOKEN (the gateway's values) for the channels fired"
        )
    return WebhookFirer(
        args.gateway,
        meta_app_secret=meta or "",
        telegram_secret_token=tg.get_secret_value() if tg else "",
        paths=WebhookPaths(args.whatsapp_path, args.instagram_path, args.telegram_path),
    )


async def _fire(
    args: argparse.Namespace, channels: tuple[SimChannel, ...], sim: SimulatorServer
) -> str | None:
    """Fire the questions; the provider id of the voice note sent, if one was."""
    firer = _firer(args, channels)
    bot = get_settings().channels.telegram_bot_token
    needs_tg = "telegram" in channels
    answers = []
    voice_id: str | None = None
    try:
        if "whatsapp" in channels:
            wa = whatsapp_update(
                phone_number_id=args.phone_number_id,
                messages=[whatsapp_message(sender="15550001111", text=args.question)],
            )
            answers.append(await firer.whatsapp(wa))
        if "instagram" in channels:
            ig = instagram_update(
                ig_id=args.ig_id,
                events=[instagram_message(ig_id=args.ig_id, sender="SIM-IGSID-1", text=args.question)],
            )
            answers.append(await firer.instagram(ig))
        if needs_tg and bot is not None:
            bot_id = bot.get_secret_value().split(":", 1)[0]
            update = telegram_update(chat_id=args.telegram_chat_id, text=args.question)
            answers.append(await firer.telegram(update, bot_id=bot_id))
        if "whatsapp" in channels and not args.no_voice_note:
            # Random bytes stand in for the Opus audio: the SIMULATED speech-to-text knows them by hash.
            audio = sim.state.add_media(
                b"OggS" + secrets.token_bytes(2048),
                mime_type="audio/ogg; codecs=opus",
                transcript=args.voice_question,
            )
            note = whatsapp_media(
                sender="15550002222", kind="audio", media_id=audio.id, mime_type=audio.mime_type, voice=True
            )
            response = await firer.whatsapp(
                whatsapp_update(phone_number_id=args.phone_number_id, messages=[note])
            )
            sys.stdout.write(f"whatsapp voice note webhook -> HTTP {response.status_code}\n")
            voice_id = str(note["message"]["id"])
    finally:
        await firer.aclose()
    for channel, response in zip(channels, answers, strict=True):
        sys.stdout.write(f"{channel} webhook -> HTTP {response.status_code}\n")
    return voice_id


def _demo(args: argparse.Namespace) -> int:
    channels = _channels(args)
    with SimulatorServer(port=args.sim_port) as sim:
        sys.stdout.write(f"provider SIMULATOR on {sim.url}; firing webhooks at {args.gateway}\n")
        voice_id = asyncio.run(_fire(args, channels, sim))
        deadline = time.monotonic() + args.timeout
        replies: dict[str, SentMessage] = {}
        for channel in channels:
            found = sim.state.wait_for(1, timeout_s=max(deadline - time.monotonic(), 0), channel=channel)
            if found:
                replies[channel] = found[0]
        for channel in channels:
            reply = replies.get(channel)
            line = f"[{channel}] to {reply.recipient}: {reply.text}" if reply else f"[{channel}] no reply"
            sys.stdout.write(line + "\n")
        voiced = True
        if voice_id is not None:
            left = max(deadline - time.monotonic(), 0)
            answer = asyncio.run(wait_reply(sim.state, voice_id, timeout_s=left))
            heard = f"[whatsapp voice note, transcribed as {args.voice_question!r}]"
            sys.stdout.write(
                f"{heard} to {answer.recipient}: {answer.text}\n" if answer else f"{heard} no reply\n"
            )
            voiced = answer is not None
        journeys = True
        if "whatsapp" in channels and not args.no_journeys:
            journeys = asyncio.run(_journeys(args, channels, sim, deadline))
    return 0 if len(replies) == len(channels) and voiced and journeys else 1


async def _journeys(
    args: argparse.Namespace, channels: tuple[SimChannel, ...], sim: SimulatorServer, deadline: float
) -> bool:
    """A ticket confirmed by a button tap, and a reply outside the 24-hour window sent as a template."""
    firer = _firer(args, channels)
    try:
        tap = await ticket_by_tap(
            firer,
            sim.state,
            phone_number_id=args.phone_number_id,
            sender="15550003333",
            text=args.ticket_request,
            timeout_s=max(deadline - time.monotonic(), 1),
        )
        _print_tap(args.ticket_request, tap)
        late = await late_message(
            firer,
            sim.state,
            phone_number_id=args.phone_number_id,
            sender="15550004444",
            text=args.question,
            hours_late=25,
            timeout_s=max(deadline - time.monotonic(), 1),
        )
    finally:
        await firer.aclose()
    heard = f"[whatsapp, delivered 25 h after the customer sent {args.question!r}]"
    if late is None:
        sys.stdout.write(f"{heard} no reply\n")
    else:
        how = "as a template" if late.body.get("type") == "template" else f"as {late.body.get('type')}"
        sys.stdout.write(f"{heard} sent {how}: {late.text}\n")
    return tap.ok and late is not None and late.body.get("type") == "template"


def _print_tap(request: str, tap: TapJourney) -> None:
    out = sys.stdout
    if tap.asked is None:
        out.write(f"[whatsapp ticket] {request!r}: no reply\n")
        return
    titles = " | ".join(b["title"] for b in tap.buttons) or "none"
    out.write(f"[whatsapp ticket] {request!r} -> {tap.asked.text} [buttons: {titles}]\n")
    if tap.done is None:
        out.write("[whatsapp ticket] no reply to the tap on Yes\n" if tap.buttons else "")
        return
    out.write(f"[whatsapp ticket] tapped 'Yes' -> {tap.done.text}\n")
    opened = f"{tap.ticket['id']}: {tap.ticket.get('subject')}" if tap.ticket else "no ticket"
    out.write(f"[SIMULATED helpdesk] {opened}\n")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    host = getattr(args, "host", "127.0.0.1")
    port = getattr(args, "port", 8900)
    server = SimulatorServer(host=host, port=port)
    sys.stdout.write(f"provider SIMULATOR on {server.url} (GET /_sim/sent, POST /_sim/faults)\n")
    sys.stdout.flush()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
