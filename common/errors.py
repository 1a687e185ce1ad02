"""One exception tree for the whole system; HTTP status codes are attached here and applied only at the edge.

Hierarchy::

    AssistantError                      500 internal_error
    ├── InvalidInput                    400 invalid_input
    │   ├── PayloadTooLarge             413 payload_too_large
    │   ├── UnsupportedMediaType        415 unsupported_media_type
    │   ├── ParseError                  422 unparseable_document  (details["reason"]: knowledge.parsing)
    │   └── SourceReadError             (one bulk-ingestion document unreadable: quarantined)
    ├── Unauthorized                    401 unauthorized
    ├── Forbidden                       403 forbidden  (a known caller without the route's scope)
    ├── NotFound                        404 not_found
    ├── Conflict                        409 conflict
    ├── RateLimited                     429 rate_limited
    ├── SendError                       502 send_failed  (a channel provider refused a reply)
    │   ├── RetryableSendError          (429, 5xx, timeout: retried, honouring Retry-After)
    │   └── PermanentSendError          (bad recipient, token, policy: dead-lettered)
    └── DependencyError                 503 dependency_unavailable   (retryable)
        ├── DatabaseUnavailable
        ├── StreamUnavailable
        ├── VectorStoreError
        ├── EmbeddingError
        │   ├── EmbeddingMismatch       (permanent: collection made by another model/dimension)
        │   └── EmbeddingPermanentError (permanent: 4xx from the embedding API, bad config)
        ├── LLMError
        │   ├── LLMTimeout
        │   └── LLMPermanentError       (permanent: 4xx from the provider, bad config)
        ├── CredentialsUnavailable      (stored credentials cannot be decrypted: SECRETS__ENCRYPTION_KEYS)
        └── ActionBackendError          (an action's commerce / helpdesk backend failed)
            ├── OrderBackendError
            └── TicketBackendError

``retryable`` tells :mod:`common.retry` whether trying again can help.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AssistantError(Exception):
    """Base of every error this system raises on purpose."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_body(self) -> dict[str, Any]:
        """Machine-readable error body used by every HTTP edge."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidInput(AssistantError):
    """The caller sent something we cannot accept as is."""

    status_code = 400
    code = "invalid_input"


class PayloadTooLarge(InvalidInput):
    """Body or upload above the configured size limit."""

    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(InvalidInput):
    """A content type we do not parse."""

    status_code = 415
    code = "unsupported_media_type"


class ParseError(InvalidInput):
    """A document of a supported type that cannot be read; ``details["reason"]`` says why."""

    status_code = 422
    code = "unparseable_document"


class Unauthorized(AssistantError):
    """Missing or wrong signature, token or secret."""

    status_code = 401
    code = "unauthorized"


class Forbidden(AssistantError):
    """The caller is who it says, but its key lacks the scope the route declares.

    Only for the caller's own resources: another tenant's resource is a :class:`NotFound`, never this,
    so a 403 never confirms that something of another tenant exists.
    """

    status_code = 403
    code = "forbidden"


class NotFound(AssistantError):
    """The named tenant, brand, conversation or job does not exist (for this caller)."""

    status_code = 404
    code = "not_found"


class Conflict(AssistantError):
    """The request conflicts with current state (e.g. conversation owned by a human)."""

    status_code = 409
    code = "conflict"


class RateLimited(AssistantError):
    """Too many requests; retry later."""

    status_code = 429
    code = "rate_limited"
    retryable = True


class DependencyError(AssistantError):
    """A backend (database, Redis, Qdrant, model) failed in a way that may pass."""

    status_code = 503
    code = "dependency_unavailable"
    retryable = True


class DatabaseUnavailable(DependencyError):
    """Postgres could not be reached or the transaction failed transiently."""


class StreamUnavailable(DependencyError):
    """Redis / Valkey could not be reached."""


class VectorStoreError(DependencyError):
    """Qdrant failed."""


class EmbeddingError(DependencyError):
    """The embedding model or API failed."""


class EmbeddingMismatch(EmbeddingError):
    """A collection was built by another embedding model or dimension: querying it would return garbage."""

    status_code = 500
    code = "embedding_mismatch"
    retryable = False


class EmbeddingPermanentError(EmbeddingError):
    """The embedding API rejected the request or the model is misconfigured; retrying cannot help."""

    retryable = False


class LLMError(DependencyError):
    """The chat model failed."""


class LLMTimeout(LLMError):
    """The chat model did not answer within its deadline."""


class LLMPermanentError(LLMError):
    """The chat model rejected the request; retrying the same request cannot help."""

    retryable = False


class SourceReadError(InvalidInput):
    """One document could not be read (missing object, permission denied): it is quarantined."""


class CredentialsUnavailable(DependencyError):
    """Stored credentials cannot be decrypted: no key is configured, or none of the keys made them.

    Retryable: the reply waits (it is not dead-lettered) until the operator restores the key.
    """

    code = "credentials_unavailable"


class ActionBackendError(DependencyError):
    """The backend behind an action (commerce API, helpdesk) failed or answered something unreadable."""


class OrderBackendError(ActionBackendError):
    """The commerce backend failed or answered something unreadable."""


class TicketBackendError(ActionBackendError):
    """The helpdesk failed or answered something unreadable."""


class SendError(AssistantError):
    """The provider did not accept (all of) a reply."""

    status_code = 502
    code = "send_failed"

    def __init__(
        self,
        message: str,
        *,
        parts_sent: int = 0,
        provider_message_ids: tuple[str, ...] = (),
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.parts_sent = parts_sent
        self.provider_message_ids = provider_message_ids


class RetryableSendError(SendError):
    """Trying again later can succeed (429, 5xx, timeout, connection error)."""

    retryable: ClassVar[bool] = True

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        parts_sent: int = 0,
        provider_message_ids: tuple[str, ...] = (),
    ) -> None:
        details: dict[str, Any] = {}
        if retry_after_s is not None:
            details["retry_after_s"] = retry_after_s  # read by common.retry
        super().__init__(
            message, parts_sent=parts_sent, provider_message_ids=provider_message_ids, details=details
        )
        self.retry_after_s = retry_after_s


class PermanentSendError(SendError):
    """The provider refused the reply for good (bad recipient, bad token, policy); never retried."""

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        reason: str,
        *,
        parts_sent: int = 0,
        provider_message_ids: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            reason,
            parts_sent=parts_sent,
            provider_message_ids=provider_message_ids,
            details={"reason": reason},
        )
        self.reason = reason


def unwrap_remote(exc: BaseException) -> BaseException:
    """The error a deployment raised, from the one its caller got.

    Ray wraps an exception raised in another replica (``RayTaskError``) and keeps the original as
    ``cause``; that original carries our status code and ``retryable``. Anything else is returned as is.
    """
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
