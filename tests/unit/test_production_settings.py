"""``ENVIRONMENT=production`` refuses to start without an operator key and an encryption key; local runs
need nothing."""

from __future__ import annotations

import pytest

from common.config import Settings, get_settings
from common.crypto import generate_key
from serve_apps import launcher


def test_production_needs_a_strong_operator_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # An in-process launcher test earlier in the run leaves its generated key in os.environ.
    monkeypatch.delenv("API__OPERATOR_KEY", raising=False)
    monkeypatch.delenv("SECRETS__ENCRYPTION_KEYS", raising=False)
    key = {"encryption_keys": generate_key()}
    assert Settings(environment="local").production_problems() == []
    assert Settings(environment="production", secrets=key).production_problems()
    assert Settings(
        environment="production", api={"operator_key": "short"}, secrets=key
    ).production_problems()
    assert (
        Settings(environment="prod", api={"operator_key": "k" * 32}, secrets=key).production_problems() == []
    )
    # Without an encryption key, channel credentials could not be stored: refused too.
    problems = Settings(environment="prod", api={"operator_key": "k" * 32}).production_problems()
    assert problems == ["SECRETS__ENCRYPTION_KEYS must be set in production (channel credentials)"]


def test_the_launcher_refuses_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.delenv("API__OPERATOR_KEY", raising=False)
    get_settings.cache_clear()
    try:
        assert launcher.main(["--no-demo"]) == 1
    finally:
        get_settings.cache_clear()
    assert "API__OPERATOR_KEY" in capsys.readouterr().err
    assert not (tmp_path / "postgres").exists() and not (tmp_path / "operator.key").exists()


def test_a_local_run_generates_its_encryption_key_once(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from common.crypto import parse_keys

    monkeypatch.delenv("SECRETS__ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("CHANNELS__PUBLIC_URL", raising=False)
    settings = Settings(data_dir=tmp_path)
    first = launcher.local_secrets_env(settings)
    key_file = tmp_path / launcher.SECRETS_KEY_FILE
    assert parse_keys(first["SECRETS__ENCRYPTION_KEYS"]) and key_file.stat().st_mode & 0o077 == 0
    assert first["CHANNELS__PUBLIC_URL"] == "http://127.0.0.1:8000"
    assert launcher.local_secrets_env(settings) == first  # a restart reads the same key back
    # A deployment that sets its own gets nothing generated.
    configured = Settings(
        data_dir=tmp_path, secrets={"encryption_keys": "x"}, channels={"public_url": "https://c"}
    )
    assert launcher.local_secrets_env(configured) == {}
