"""Locust load profile: concurrent multi-turn conversations per brand.

Each simulated user is one customer holding one conversation with one brand: it asks a few questions
from the brand's knowledge with think time between turns, then starts over as a new customer. Brands
come from ``LOAD_BRANDS`` (comma-separated brand ids); users are spread evenly across them.

Thresholds (``LOAD_MAX_ERROR_RATE``, ``LOAD_MAX_P99_MS``) make Locust exit non-zero when they fail.
Run through ``make load`` (bench/load.py starts the system with an LLM stub and writes the report).
"""

from __future__ import annotations

import itertools
import os
import random
import uuid

from locust import HttpUser, between, events, task
from locust.env import Environment

from bench.questions import QUESTIONS

_brands = itertools.cycle([b for b in os.environ.get("LOAD_BRANDS", "").split(",") if b])


class Customer(HttpUser):
    """One customer in a multi-turn web chat conversation."""

    wait_time = between(1.0, 3.0)

    def on_start(self) -> None:
        self.brand_id = next(_brands)
        self._new_conversation()

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
            "/v1/messages/inbound", json=body, name="web chat turn", catch_response=True
        ) as resp:
            if resp.status_code == 200 and not resp.json().get("text"):
                resp.failure("empty reply")
            elif resp.status_code in (429, 503):
                resp.failure(f"shed load ({resp.status_code})")  # backpressure, counted separately
        self.turns_left -= 1
        if self.turns_left <= 0:
            self._new_conversation()


@events.quitting.add_listener
def _check_thresholds(environment: Environment, **_: object) -> None:
    stats = environment.stats.total
    max_error_rate = float(os.environ.get("LOAD_MAX_ERROR_RATE", "0"))
    max_p99_ms = float(os.environ.get("LOAD_MAX_P99_MS", "0"))
    too_many_errors = stats.num_requests == 0 or stats.fail_ratio > max_error_rate
    too_slow = bool(max_p99_ms) and stats.get_response_time_percentile(0.99) > max_p99_ms
    if too_many_errors or too_slow:
        environment.process_exit_code = 1
