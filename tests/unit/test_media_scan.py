"""The clamd client (``INSTREAM``) against the SIMULATED clamd and a clamd that answers an error."""

from __future__ import annotations

import asyncio

import pytest

from common.errors import DependencyError, InvalidInput
from common.media_scan import CHUNK, ClamdScanner, parse_address
from serve_apps.simulator.clamd import EICAR, SimulatedClamd


@pytest.mark.parametrize("address", ["clamd", "clamd:", ":3310", "clamd:port", "clamd:70000"])
def test_a_malformed_address_is_a_clear_error(address: str) -> None:
    with pytest.raises(InvalidInput, match="host:port"):
        parse_address(address)


def test_ipv6_and_names_parse() -> None:
    assert parse_address("[::1]:3310") == ("::1", 3310)
    assert parse_address("clamav.security.svc:3310") == ("clamav.security.svc", 3310)


async def test_clean_and_infected_files_across_several_chunks() -> None:
    with SimulatedClamd() as clamd:
        scanner = ClamdScanner(clamd.address)
        assert (await scanner.scan(b"a" * (CHUNK * 2 + 5))).clean
        # The signature split across two chunks is still found: the stream is scanned whole.
        infected = b"x" * (CHUNK - 10) + EICAR
        verdict = await scanner.scan(infected)
        assert not verdict.clean and verdict.signature == "Eicar-Test-Signature"
        assert (await scanner.scan(b"")).clean


async def test_an_error_answer_or_no_server_is_a_dependency_error() -> None:
    async def size_limit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\0")
        writer.write(b"INSTREAM size limit exceeded. ERROR\0")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(size_limit, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(DependencyError, match="virus scan failed: INSTREAM size limit exceeded"):
            await ClamdScanner(f"127.0.0.1:{port}").scan(b"data")
    with pytest.raises(DependencyError, match="virus scan unavailable"):
        await ClamdScanner(f"127.0.0.1:{port}", timeout_s=2).scan(b"data")
