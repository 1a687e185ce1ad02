"""A FAKE commerce + helpdesk HTTP server for tests (not a product component).

It speaks the contracts documented in ``common/conversation/actions/plugins/order_lookup.py`` and
``create_ticket.py``: ``GET /orders/{id}`` and ``POST /tickets`` (with ``Idempotency-Key``), both behind a
bearer key. It runs a real uvicorn server on a free local port in a background thread, so the plugins'
HTTP backends are exercised over real sockets, and it records every request for assertions.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

API_KEY = "fake-commerce-key"


@dataclass
class FakeCommerceState:
    """Orders served and what the server received."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    tickets: list[dict[str, Any]] = field(default_factory=list)
    order_requests: list[str] = field(default_factory=list)
    ticket_keys: dict[str, str] = field(default_factory=dict)
    unauthorized: int = 0


def build_fake_app(state: FakeCommerceState, *, api_key: str = API_KEY) -> FastAPI:
    """The fake's ASGI app (usable with ``httpx.ASGITransport`` too)."""
    app = FastAPI()

    def authorized(request: Request) -> bool:
        ok = request.headers.get("authorization") == f"Bearer {api_key}"
        state.unauthorized += not ok
        return ok

    @app.get("/orders/{order_id}")
    async def order(order_id: str, request: Request) -> JSONResponse:
        if not authorized(request):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        state.order_requests.append(order_id)
        found = state.orders.get(order_id)
        if found is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(found)

    @app.post("/tickets")
    async def ticket(request: Request) -> JSONResponse:
        if not authorized(request):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        key = request.headers.get("idempotency-key", "")
        if key and key in state.ticket_keys:
            return JSONResponse({"id": state.ticket_keys[key]}, status_code=200)
        body = await request.json()
        ticket_id = f"T-{1000 + len(state.tickets)}"
        state.tickets.append({"id": ticket_id, **body, "idempotency_key": key})
        if key:
            state.ticket_keys[key] = ticket_id
        return JSONResponse({"id": ticket_id}, status_code=201)

    return app


class FakeCommerceServer:
    """Runs :func:`build_fake_app` on ``127.0.0.1:<free port>`` until :meth:`stop`."""

    def __init__(self, *, api_key: str = API_KEY) -> None:
        self.state = FakeCommerceState()
        self.api_key = api_key
        self.port = _free_port()
        config = uvicorn.Config(
            build_fake_app(self.state, api_key=api_key),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-commerce", daemon=True)

    @property
    def url(self) -> str:
        """Base URL for ``ACTIONS__COMMERCE_BASE_URL`` / ``ACTIONS__HELPDESK_BASE_URL``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeCommerceServer:
        """Start and wait until it accepts connections (at most 10 s)."""
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake commerce server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop the server and join its thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
