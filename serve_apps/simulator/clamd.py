"""A SIMULATED ClamAV daemon: speaks clamd's ``INSTREAM`` wire protocol on a local TCP port, so the
virus-scan hook (:mod:`common.media_scan`) is tested against a real socket, not a mocked client.

It is not an antivirus: it reports a file as infected exactly when it contains the EICAR test string
(the harmless file every antivirus, clamd included, flags as ``Eicar-Test-Signature``), and OK otherwise.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from types import TracebackType

#: The EICAR anti-malware test file (harmless by design; scanners detect it as a test signature).
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


class SimulatedClamd:
    """``with SimulatedClamd() as clamd:`` serves on ``clamd.address`` (``127.0.0.1:<port>``)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="sim-clamd", daemon=True)
        self.port = 0
        self.scanned = 0

    @property
    def address(self) -> str:
        """Where it listens, as ``MEDIA__CLAMD_ADDRESS`` takes it."""
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> SimulatedClamd:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        )
        self._server = started.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop listening (a test's "clamd went away"); again is a no-op."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        asyncio.run_coroutine_threadsafe(server.wait_closed(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            command = await reader.readuntil(b"\0")
            if command != b"zINSTREAM\0":
                writer.write(b"UNKNOWN COMMAND\0")
                return
            data = bytearray()
            while True:
                (size,) = struct.unpack(">I", await reader.readexactly(4))
                if size == 0:
                    break
                data += await reader.readexactly(size)
            self.scanned += 1
            verdict = b"Eicar-Test-Signature FOUND" if EICAR in data else b"OK"
            writer.write(b"stream: " + verdict + b"\0")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()
