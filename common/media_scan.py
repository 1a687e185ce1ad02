"""The virus-scan hook for media customers send: ClamAV's ``clamd`` over TCP (``MEDIA__CLAMD_ADDRESS``,
``host:port``, usually a sidecar on 3310), before anything is stored.

The ``INSTREAM`` command, as clamd documents it: ``zINSTREAM\\0``, then the file in chunks, each a 4-byte
big-endian length and its bytes, then a zero length; clamd answers ``stream: OK``, ``stream: <signature>
FOUND`` or ``... ERROR``. Written here rather than taken from a library: the Python clamd clients on PyPI
are unmaintained and synchronous, and the protocol is these few lines.

Fail closed: a file is stored only after clamd said OK. An unreachable or failing clamd is a
:class:`~common.errors.DependencyError`, so the message is processed again later (the media stays
``pending``); an infected file is refused (``failed``, with the signature for the agents) and never stored.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from common.config import MediaSettings
from common.errors import DependencyError, InvalidInput

#: Bytes per INSTREAM chunk (clamd's own limit is StreamMaxLength for the whole stream, 25 MB default).
CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class ScanVerdict:
    """``clean``, or the ``signature`` clamd found."""

    clean: bool
    signature: str = ""


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` → ``(host, port)``; a clear error for anything else."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(
            "MEDIA__CLAMD_ADDRESS must be host:port", details={"setting": "media.clamd_address"}
        )
    return host.strip("[]"), int(port)


class ClamdScanner:
    """Scans bytes with a clamd daemon (one connection per file, as clamd expects for INSTREAM)."""

    def __init__(self, address: str, *, timeout_s: float = 30.0) -> None:
        self._host, self._port = parse_address(address)
        self._timeout_s = timeout_s

    async def scan(self, data: bytes) -> ScanVerdict:
        """The verdict on ``data``; :class:`DependencyError` when clamd cannot give one."""
        try:
            async with asyncio.timeout(self._timeout_s):
                reply = await self._instream(data)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            raise DependencyError(
                f"virus scan unavailable: {type(exc).__name__}", details={"scanner": "clamd"}
            ) from exc
        answer = reply.rstrip("\0").strip()
        verdict = answer.split(":", 1)[-1].strip()
        if verdict == "OK":
            return ScanVerdict(clean=True)
        if verdict.endswith(" FOUND"):
            return ScanVerdict(clean=False, signature=verdict.removesuffix(" FOUND").strip()[:200])
        raise DependencyError(f"virus scan failed: {answer[:200]}", details={"scanner": "clamd"})

    async def _instream(self, data: bytes) -> str:
        reader, writer = await asyncio.open_connection(self._host, self._port)
        try:
            writer.write(b"zINSTREAM\0")
            for start in range(0, len(data), CHUNK):
                chunk = data[start : start + CHUNK]
                writer.write(struct.pack(">I", len(chunk)) + chunk)
                await writer.drain()
            writer.write(struct.pack(">I", 0))
            await writer.drain()
            reply = await reader.readuntil(b"\0")
        finally:
            writer.close()
            await writer.wait_closed()
        return reply.decode("utf-8", "replace")


def build_scanner(settings: MediaSettings) -> ClamdScanner | None:
    """The scanner ``MEDIA__CLAMD_ADDRESS`` names, or None (files are then stored unscanned)."""
    if not settings.clamd_address:
        return None
    return ClamdScanner(settings.clamd_address, timeout_s=settings.scan_timeout_s)
