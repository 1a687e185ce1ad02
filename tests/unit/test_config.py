"""Settings precedence: explicit args > environment > .env > defaults; secrets stay secret."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import structlog

from common.config import LLMProvider, ServiceEndpoints, Settings


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory with none of our variables set."""
    monkeypatch.chdir(tmp_path)
    for name in (
        "DATABASE_URL",
        "REDIS_URL",
        "QDRANT_URL",
        "RAY_ADDRESS",
        "LLM_BASE_URL",
        "LLM_API_KEY",
        "LLM__BASE_URL",
        "LLM__API_KEY",
        "LLM__MAX_TOKENS",
        "DATABASE__URL",
        "LLM_PROVIDER",
    ):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_defaults_mean_embedded(in_tmp: Path) -> None:
    s = Settings()
    assert s.database.url is None and s.redis.url is None and s.qdrant.url is None
    assert s.llm.provider is LLMProvider.LOCAL
    assert s.qdrant_path == in_tmp / ".data" / "qdrant"


def test_dotenv_overrides_defaults(in_tmp: Path) -> None:
    (in_tmp / ".env").write_text("LLM__MAX_TOKENS=99\nDATABASE_URL=postgresql://dotenv/db\n")
    s = Settings()
    assert s.llm.max_tokens == 99
    assert s.database.url == "postgresql://dotenv/db"


def test_environment_overrides_dotenv(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (in_tmp / ".env").write_text("LLM__MAX_TOKENS=99\nDATABASE_URL=postgresql://dotenv/db\n")
    monkeypatch.setenv("LLM__MAX_TOKENS", "77")
    monkeypatch.setenv("DATABASE_URL", "postgresql://env/db")
    s = Settings()
    assert s.llm.max_tokens == 77
    assert s.database.url == "postgresql://env/db"


def test_nested_spelling_wins_over_conventional_name(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://conventional/db")
    monkeypatch.setenv("DATABASE__URL", "postgresql://nested/db")
    assert Settings().database.url == "postgresql://nested/db"


def test_explicit_arguments_override_environment(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM__MAX_TOKENS", "77")
    monkeypatch.setenv("REDIS_URL", "redis://env:6379/0")
    s = Settings(llm={"max_tokens": 5}, redis={"url": "redis://explicit:6379/1"})
    assert s.llm.max_tokens == 5
    assert s.redis.url == "redis://explicit:6379/1"


def test_invalid_value_is_a_clear_error(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM__TEMPERATURE", "9")
    with pytest.raises(ValueError, match="temperature"):
        Settings()


def test_secrets_never_appear_in_repr_or_logs(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LLM_API_KEY", "sk-very-secret-1")
    monkeypatch.setenv("CHANNELS__META_APP_SECRET", "meta-very-secret-2")
    s = Settings()
    assert s.llm.api_key is not None and s.llm.api_key.get_secret_value() == "sk-very-secret-1"
    for text in (repr(s), str(s), s.model_dump_json()):
        assert "sk-very-secret-1" not in text
        assert "meta-very-secret-2" not in text
    with structlog.testing.capture_logs() as logs:
        structlog.get_logger().info("settings", settings=s)
    rendered = structlog.processors.JSONRenderer(default=str)(None, "info", dict(logs[0]))
    assert "sk-very-secret-1" not in rendered and "**********" in rendered
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("settings %s", s)
    assert "meta-very-secret-2" not in caplog.text


def test_service_endpoints_apply_without_touching_the_rest(in_tmp: Path) -> None:
    base = Settings(llm={"max_tokens": 12})
    ep = ServiceEndpoints(
        database_url="postgresql://h/db", redis_url="redis://h:1/0", redis_key_prefix="p1", qdrant_path=in_tmp
    )
    s = ep.apply(base)
    assert (s.database.url, s.redis.url, s.redis.key_prefix, s.qdrant_path) == (
        "postgresql://h/db",
        "redis://h:1/0",
        "p1",
        in_tmp,
    )
    assert s.llm.max_tokens == 12 and base.database.url is None
