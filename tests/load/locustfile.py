"""Locust load profile: concurrent multi-turn conversations per brand.

Each simulated user is one customer holding one conversation with one brand: it asks a few questions
from the brand's knowledge with think time between turns, then starts over as a new customer. Brands
come from ``LOAD_BRANDS`` (comma-separated brand ids); users are spread evenly across them. The
platform API key is ``LOAD_API_KEY`` (a key of the brands' tenant with ``messages:write``).

With ``LOAD_META_SECRET`` and ``LOAD_WA_PHONE_ID`` set, :class:`WhatsAppCustomer` users also send signed
WhatsApp webhooks (``LOAD_WEBHOOK_WEIGHT`` of them per ``Customer``, default 1): the request named
"webhook ack" is the gateway's acknowledgement only; each sent message id and its send time are appended
to ``LOAD_WEBHOOK_LOG`` so bench/load.py can match the reply the SIMULATOR received (end to end). With
``LOAD_SIM_URL`` set they hold a dialogue like the web chat customers: after the acknowledgement they
wait (up to ``LOAD_REPLY_WAIT_S``, default 60 s) for the reply to reach the SIMULATOR, then think, then
write again; without it they send on a timer, whatever the backlog (an open-loop overload test).

429/503 answers are failures named "shed load (...)": backpressure, reported apart from real errors.
Thresholds (``LOAD_MAX_ERROR_RATE``, ``LOAD_MAX_P99_MS``) make Locust exit non-zero when they fail.
Run through ``make load`` (bench/load.py starts the system with an LLM stub and writes the report).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import os
import random
import threading
import time
import uuid

import requests
from locust import HttpUser, between, events, task
from locust.env import Environment

from bench.questions import QUESTIONS

#: Think time between a customer's turns (reading the answer, typing the next message), in seconds.
API_HEADERS = (
    {"authorization": f"Bearer {os.environ['LOAD_API_KEY']}"} if os.environ.get("LOAD_API_KEY") else {}
)
THINK_S = tuple(float(x) for x in os.environ.get("LOAD_THINK_S", "5,15").split(","))


def _arrive() -> None:
    """Customers turn up at random moments of a think time, not all in the spawn second: otherwise
    every user's first message lands at once and the run measures a start-up burst."""
    time.sleep(random.uniform(0, THINK_S[1]))  # gevent-patched: yields to the other users


_brands = itertools.cycle([b for b in os.environ.get("LOAD_BRANDS", "").split(",") if b])


class Customer(HttpUser):
    """One customer in a multi-turn web chat conversation."""

    wait_time = between(*THINK_S)

    def on_start(self) -> None:
        self.brand_id = next(_brands)
        self._new_conversation()
        _arrive()

    def _new_conversation(self) -> None:
        self.customer_id = f"load-{uuid.uuid4().hex[:12]}"
        self.turns_left = random.randint(2, 4)

    @task
    def ask(self) -> None:
        body = {
            "brand_id": self.brand_id,
            "customer_id": self.customer_id,
            "text": random.choice(QUESTIONS),
            "message_id": uuid.uuid4().hex,
        }
        with self.client.post(
            "/v1/messages/inbound", json=body, headers=API_HEADERS, name="web chat turn", catch_response=True
        ) as resp:
            if resp.status_code == 200 and not resp.json().get("text"):
                resp.failure("empty reply")
            elif resp.status_code in (429, 503):
                resp.failure(f"shed load ({resp.status_code})")  # backpressure, counted separately
        self.turns_left -= 1
        if self.turns_left <= 0:
            self._new_conversation()


_log_lock = threading.Lock()


def _log_webhook(wamid: str, sent_at: float) -> None:
    path = os.environ.get("LOAD_WEBHOOK_LOG")
    if path:
        with _log_lock, open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{wamid},{sent_at:.6f}\n")


class WhatsAppCustomer(HttpUser):
    """One WhatsApp customer: signed webhooks; the reply goes to the provider SIMULATOR."""

    wait_time = between(*THINK_S)
    weight = int(os.environ.get("LOAD_WEBHOOK_WEIGHT", "1"))

    def on_start(self) -> None:
        self.secret = os.environ["LOAD_META_SECRET"].encode()
        self.phone_id = os.environ["LOAD_WA_PHONE_ID"]
        self.sim_url = os.environ.get("LOAD_SIM_URL", "").rstrip("/")
        self.reply_wait_s = float(os.environ.get("LOAD_REPLY_WAIT_S", "60"))
        # Reading replies is not a request to the system under test: a plain session, not in the stats.
        self.sim = requests.Session()
        self._new_conversation()
        _arrive()

    def _new_conversation(self) -> None:
        self.sender = f"1777{random.randint(0, 10**7 - 1):07d}"
        self.turns_left = random.randint(2, 4)

    def _await_reply(self, wamid: str) -> None:
        if not self.sim_url:
            return
        # An unanswered message shows up in bench/load.py's end-to-end count; the dialogue goes on.
        with contextlib.suppress(requests.RequestException):
            self.sim.get(
                f"{self.sim_url}/_sim/replies/{wamid}",
                params={"wait_s": self.reply_wait_s},
                timeout=self.reply_wait_s + 10,
            )

    @task
    def message(self) -> None:
        wamid = f"wamid.LOAD{uuid.uuid4().hex}"
        value = {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": self.phone_id},
            "contacts": [{"profile": {"name": "Load"}, "wa_id": self.sender}],
            "messages": [
                {
                    "from": self.sender,
                    "id": wamid,
                    "timestamp": str(int(time.time())),
                    "type": "text",
                    "text": {"body": random.choice(QUESTIONS)},
                }
            ],
        }
        envelope = {
            "object": "whatsapp_business_account",
            "entry": [{"id": "LOAD-WABA", "changes": [{"value": value, "field": "messages"}]}],
        }
        body = json.dumps(envelope, separators=(",", ":")).encode()
        signature = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        headers = {"X-Hub-Signature-256": signature, "content-type": "application/json"}
        sent_at = time.time()
        acknowledged = False
        with self.client.post(
            "/webhooks/whatsapp", data=body, headers=headers, name="webhook ack", catch_response=True
        ) as resp:
            if resp.status_code in (429, 503):
                resp.failure(f"shed load ({resp.status_code})")
            elif resp.status_code == 200:
                _log_webhook(wamid, sent_at)
                acknowledged = True
        if acknowledged:
            self._await_reply(wamid)
        self.turns_left -= 1
        if self.turns_left <= 0:
            self._new_conversation()


if not os.environ.get("LOAD_META_SECRET"):
    WhatsAppCustomer.abstract = True  # web chat only


@events.quitting.add_listener
def _check_thresholds(environment: Environment, **_: object) -> None:
    stats = environment.stats.total
    max_error_rate = float(os.environ.get("LOAD_MAX_ERROR_RATE", "0"))
    max_p99_ms = float(os.environ.get("LOAD_MAX_P99_MS", "0"))
    too_many_errors = stats.num_requests == 0 or stats.fail_ratio > max_error_rate
    too_slow = bool(max_p99_ms) and stats.get_response_time_percentile(0.99) > max_p99_ms
    if too_many_errors or too_slow:
        environment.process_exit_code = 1
