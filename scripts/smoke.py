"""Post-deploy smoke test: ``python scripts/smoke.py --base-url https://assistant.example.com``.

Checks, in order, and stops at the first failure with a one-line reason and exit code 1:

1. ``GET /healthz`` answers 200 (the Serve proxy and the gateway are up);
2. ``GET /readyz`` answers 200 within ``--wait`` seconds (Postgres and Redis reachable);
3. ``POST /v1/messages/inbound`` to a sandbox brand (with the tenant API key in ``SMOKE_API_KEY``, a
   key with the ``messages:write`` scope) answers with a non-empty reply **with citations**
   (retrieval, the LLM and the guardrails all ran);
4. with ``--meta-app-secret``: a WhatsApp Cloud API webhook signed like Meta signs it
   (``X-Hub-Signature-256``) to ``/webhooks/whatsapp`` is accepted (200, ``accepted`` = 1 when
   ``--whatsapp-phone-number-id`` is routed to a brand).

Prints one JSON line with each check's result and latency. Usable after any deploy (CD runs it
against staging before promoting to prod). Standard library + httpx only; no project imports, so it
runs from any checkout or CI runner.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

#: The demo brand that ``make run`` and the seed job create; staging keeps it as its sandbox brand.
DEMO_BRAND_ID = "6f1c2a4e-0000-4000-8000-0000000000b1"
DEFAULT_QUESTION = "How long do I have to return an item?"


class SmokeFailure(Exception):
    """A check failed; the message says which and why."""


@dataclass
class Report:
    """What ran, for the JSON line printed at the end."""

    base_url: str
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    ok: bool = False

    def record(self, name: str, started: float, **details: Any) -> None:
        """Store one passed check with its latency in milliseconds."""
        latency_ms = round((time.monotonic() - started) * 1000, 1)
        self.checks[name] = {"ok": True, "latency_ms": latency_ms, **details}


def check_health(client: httpx.Client, report: Report) -> None:
    """Liveness: the gateway answers at all."""
    started = time.monotonic()
    resp = client.get("/healthz")
    if resp.status_code != 200:
        raise SmokeFailure(f"GET /healthz answered {resp.status_code}: {resp.text[:200]}")
    report.record("healthz", started)


def check_ready(
    client: httpx.Client, report: Report, *, wait_s: float, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Readiness, polled: right after a deploy the backends may still be connecting."""
    started = time.monotonic()
    deadline = started + wait_s
    while True:
        resp = client.get("/readyz")
        if resp.status_code == 200:
            report.record("readyz", started, body=resp.json())
            return
        if time.monotonic() >= deadline:
            raise SmokeFailure(f"GET /readyz still {resp.status_code} after {wait_s:.0f}s: {resp.text[:200]}")
        sleep(2.0)


def check_message(client: httpx.Client, report: Report, *, brand_id: str, question: str) -> None:
    """One real answer: it must carry citations, else retrieval or grounding is broken."""
    started = time.monotonic()
    body = {
        "brand_id": brand_id,
        "customer_id": "smoke-test",
        "text": question,
        "message_id": f"smoke-{uuid.uuid4()}",
    }
    resp = client.post("/v1/messages/inbound", json=body)
    if resp.status_code in (401, 403):
        raise SmokeFailure(
            f"POST /v1/messages/inbound answered {resp.status_code}: set SMOKE_API_KEY to a key of the "
            "sandbox brand's tenant with the messages:write scope"
        )
    if resp.status_code != 200:
        raise SmokeFailure(f"POST /v1/messages/inbound answered {resp.status_code}: {resp.text[:300]}")
    reply = resp.json()
    if not str(reply.get("text", "")).strip():
        raise SmokeFailure("the reply text is empty")
    citations = reply.get("citations") or []
    if not citations:
        raise SmokeFailure(
            f"the reply has no citations (is knowledge indexed for brand {brand_id}?): {reply.get('text')!r}"
        )
    if reply.get("duplicate"):
        raise SmokeFailure("a fresh message id was answered as a duplicate")
    report.record("inbound_message", started, citations=len(citations), escalated=reply.get("escalated"))


def whatsapp_payload(*, phone_number_id: str, text: str) -> dict[str, Any]:
    """A minimal WhatsApp Cloud API text-message webhook, as Meta sends it."""
    wamid = f"wamid.smoke-{uuid.uuid4().hex}"
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "smoke",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "0", "phone_number_id": phone_number_id},
                            "contacts": [{"wa_id": "10000000000", "profile": {"name": "Smoke Test"}}],
                            "messages": [
                                {
                                    "from": "10000000000",
                                    "id": wamid,
                                    "timestamp": str(int(time.time())),
                                    "type": "text",
                                    "text": {"body": text},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }


def meta_signature(secret: str, body: bytes) -> str:
    """``X-Hub-Signature-256`` value: HMAC-SHA256 of the raw body with the app secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_whatsapp(
    client: httpx.Client, report: Report, *, secret: str, phone_number_id: str | None, question: str
) -> None:
    """A signed webhook is accepted; an unrouted phone number id is reported, not hidden."""
    started = time.monotonic()
    body = json.dumps(whatsapp_payload(phone_number_id=phone_number_id or "0", text=question)).encode()
    headers = {"content-type": "application/json", "x-hub-signature-256": meta_signature(secret, body)}
    resp = client.post("/webhooks/whatsapp", content=body, headers=headers)
    if resp.status_code != 200:
        raise SmokeFailure(f"POST /webhooks/whatsapp answered {resp.status_code}: {resp.text[:300]}")
    ack = resp.json()
    if phone_number_id is not None and ack.get("accepted") != 1:
        raise SmokeFailure(f"webhook not accepted for phone_number_id {phone_number_id}: {ack}")
    report.record("whatsapp_webhook", started, ack=ack)


def run(opts: argparse.Namespace, *, transport: httpx.BaseTransport | None = None) -> Report:
    """Every check against ``opts.base_url``; raises :class:`SmokeFailure` at the first failure."""
    report = Report(base_url=opts.base_url)
    headers = {"authorization": f"Bearer {opts.api_key}"} if opts.api_key else {}
    with httpx.Client(
        base_url=opts.base_url, timeout=opts.timeout, transport=transport, headers=headers
    ) as client:
        check_health(client, report)
        check_ready(client, report, wait_s=opts.wait)
        check_message(client, report, brand_id=opts.brand_id, question=opts.question)
        if opts.meta_app_secret:
            check_whatsapp(
                client,
                report,
                secret=opts.meta_app_secret,
                phone_number_id=opts.whatsapp_phone_number_id,
                question=opts.question,
            )
    report.ok = True
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line (``--help`` prints the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="scripts/smoke.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", required=True, help="e.g. https://assistant.staging.example.com")
    parser.add_argument("--brand-id", default=DEMO_BRAND_ID, help="sandbox brand with indexed knowledge")
    parser.add_argument("--question", default=DEFAULT_QUESTION)
    parser.add_argument(
        "--meta-app-secret",
        default=None,
        help="also send a signed WhatsApp webhook (or set SMOKE_META_APP_SECRET: keeps it out of `ps`)",
    )
    parser.add_argument("--whatsapp-phone-number-id", default=None, help="phone number id routed to a brand")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for /readyz")
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, *, transport: httpx.BaseTransport | None = None) -> int:
    """Exit 0 when every check passed, 1 with a reason on stderr otherwise."""
    opts = parse_args(argv)
    opts.meta_app_secret = opts.meta_app_secret or os.environ.get("SMOKE_META_APP_SECRET")
    opts.api_key = os.environ.get("SMOKE_API_KEY")  # from the environment only: never in `ps` or argv
    try:
        report = run(opts, transport=transport)
    except SmokeFailure as exc:
        sys.stderr.write(f"SMOKE FAILED ({opts.base_url}): {exc}\n")
        return 1
    except httpx.HTTPError as exc:
        sys.stderr.write(f"SMOKE FAILED ({opts.base_url}): {type(exc).__name__}: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(asdict(report)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
