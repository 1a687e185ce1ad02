"""What WhatsApp and Instagram share: Meta's webhook signature and envelope, and Graph API sends.

Webhooks: every POST is signed with the app secret (``X-Hub-Signature-256``) and is an envelope
``{"object": ..., "entry": [...]}``; :class:`MetaAdapter` verifies, validates the envelope against the
channel's model, checks ``object`` and leaves only the entries to the channel.

Sends: Graph errors are ``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}``. Throttling
can come back as HTTP 400 with a rate-limit ``code``, so the code decides, not only the status.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar, cast

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from common.channels.base import IgnoredEvent, ParsedEvent, RecipientConfig, invalid_payload
from common.channels.http import HttpSender, body_json, parse_retry_after
from common.domain import Channel
from common.errors import PermanentSendError, RetryableSendError, SendError, Unauthorized

META_SIGNATURE_HEADER = "x-hub-signature-256"

#: Graph error codes meaning "slow down" (app, account, pair and spam-rate limits).
THROTTLE_CODES = frozenset({4, 17, 32, 613, 80007, 130429, 131048, 131056})


def verify_meta_signature(*, headers: Mapping[str, str], body: bytes, secret: str | None) -> None:
    """Check Meta's ``X-Hub-Signature-256: sha256=<hex>`` (HMAC-SHA256 of the raw body, app secret).

    No configured secret means nothing can be verified, so everything is refused: the check is never
    skipped.
    """
    if not secret:
        raise Unauthorized("webhook secret is not configured")
    header = headers.get(META_SIGNATURE_HEADER, "")
    scheme, _, received = header.partition("=")
    if scheme != "sha256" or not received:
        raise Unauthorized("missing or malformed signature")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, received.strip().lower()):
        raise Unauthorized("signature does not match")


class Loose(BaseModel):
    # Providers add fields without notice; only the ones read here are required.
    model_config = ConfigDict(extra="ignore")


class MetaEnvelope(Loose):
    """``{"object": ..., "entry": [...]}``; each channel's model adds its ``entry`` shape."""

    object: str


EnvelopeT = TypeVar("EnvelopeT", bound=MetaEnvelope)


class MetaAdapter(Generic[EnvelopeT]):
    """Verifies (app-secret HMAC) and parses one Meta product's webhooks; subclasses read the entries."""

    channel: Channel
    #: The envelope's ``object`` for this product (``whatsapp_business_account``, ``instagram``).
    object_name: ClassVar[str]
    envelope: ClassVar[type[MetaEnvelope]]

    def verify(self, *, headers: Mapping[str, str], body: bytes, secret: str | None) -> None:
        """Meta's ``X-Hub-Signature-256`` over the raw body."""
        verify_meta_signature(headers=headers, body=body, secret=secret)

    def parse(self, payload: Any, *, account_id: str | None = None) -> list[ParsedEvent]:
        """Every event of every entry, in delivery order; another product's envelope is ignored."""
        try:
            parsed = self.envelope.model_validate(payload)
        except ValidationError as exc:
            raise invalid_payload(exc) from exc
        if parsed.object != self.object_name:
            return [IgnoredEvent(reason=f"object {parsed.object!r} is not {self.object_name}")]
        return self.events(cast(EnvelopeT, parsed))

    def events(self, envelope: EnvelopeT) -> list[ParsedEvent]:
        """The events of a verified envelope of this product."""
        raise NotImplementedError


def graph_error(response: httpx.Response, *, channel: str) -> SendError:
    """Classify a non-2xx Graph response."""
    error = body_json(response).get("error")
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    text = f"{channel} Graph API {response.status_code}" + (f" code {code}: {message}" if code else "")
    if response.status_code == 429 or response.status_code >= 500 or code in THROTTLE_CODES:
        return RetryableSendError(text, retry_after_s=parse_retry_after(response.headers.get("retry-after")))
    return PermanentSendError(text)


class GraphSender(HttpSender):
    """Shared by the WhatsApp and Instagram senders: ``POST {graph}/{version}/{account}/messages``."""

    async def _post_message(self, account: RecipientConfig, body: dict[str, Any]) -> dict[str, Any]:
        """Send one message body from ``account``; the provider's JSON answer, or a classified error."""
        return await self._graph_post(account, "messages", json=body)

    async def _graph_post(
        self,
        account: RecipientConfig,
        edge: str,
        *,
        json: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
    ) -> dict[str, Any]:
        """``POST {graph}/{version}/{account}/{edge}`` with the account's token (JSON, or a multipart
        form); the provider's JSON answer, or a classified error."""
        token = account.secret("access_token", self._secrets.meta_access_token)
        if token is None:
            raise PermanentSendError(
                "no access token: the connection has none and CHANNELS__META_ACCESS_TOKEN is unset"
            )
        graph = self._secrets.meta_graph_url.rstrip("/")
        url = f"{graph}/{self._secrets.meta_graph_version}/{account.external_id}/{edge}"
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
        response = await self._post(url, json=json, data=data, files=files, headers=headers)
        if not response.is_success:
            raise graph_error(response, channel=str(self.channel))
        return body_json(response)
