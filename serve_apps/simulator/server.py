"""Run the provider SIMULATOR with uvicorn in a background thread (tests, the demo) or in the foreground."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Collection, Mapping
from types import TracebackType

import uvicorn

from serve_apps.simulator.app import build_simulator_app
from serve_apps.simulator.state import SimulatorState


class SimulatorServer:
    """The simulator on ``host:port`` (0 = a free port), started in a thread; use as a context manager."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        state: SimulatorState | None = None,
        meta_access_token: str | None = None,
        telegram_bot_token: str | None = None,
        meta_access_tokens: Mapping[str, str] | None = None,
        telegram_bot_tokens: Collection[str] = (),
    ) -> None:
        self.state = state or SimulatorState()
        app = build_simulator_app(
            self.state,
            meta_access_token=meta_access_token,
            telegram_bot_token=telegram_bot_token,
            meta_access_tokens=meta_access_tokens,
            telegram_bot_tokens=telegram_bot_tokens,
        )
        # Bind here so port 0 resolves before start() returns and the port cannot be taken meanwhile.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL: use it as ``CHANNELS__META_GRAPH_URL`` and ``CHANNELS__TELEGRAM_API_URL``."""
        return f"http://{self.host}:{self.port}"

    def start(self, *, timeout_s: float = 10.0) -> SimulatorServer:
        """Serve in a daemon thread; returns once the server accepts connections."""
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="provider-simulator",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("provider simulator did not start")
            time.sleep(0.02)
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted."""
        self._server.run(sockets=[self._socket])

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
