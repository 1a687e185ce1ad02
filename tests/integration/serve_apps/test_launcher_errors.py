"""`make run` that cannot start says why in one line (no stack trace) and exits 1."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from common.config import get_settings
from serve_apps import launcher

pytestmark = pytest.mark.integration


@pytest.fixture
def taken_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def test_a_taken_valkey_port_is_one_line_and_exit_code_1(
    database_url: str,
    taken_port: int,
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The launcher points structlog at the current stderr, which capsys closes after this test: keep the
    # suite's logging as it is.
    monkeypatch.setattr(launcher, "configure_logging", lambda **_: None)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", database_url)  # the embedded Postgres is not what is tested here
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS__URL", raising=False)
    monkeypatch.setenv("REDIS__EMBEDDED_PORT", str(taken_port))
    get_settings.cache_clear()
    try:
        code = launcher.main(["--no-demo", "--exit-after-start"])
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert code == 1
    line = [x for x in err.splitlines() if x.startswith("launcher:")]
    assert line and "embedded Valkey failed to start" in line[0] and str(taken_port) in line[0]
    assert "Traceback" not in err
