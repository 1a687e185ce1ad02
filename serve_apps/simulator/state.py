"""What the provider simulator remembers: the sends it accepted, the faults queued for the next calls.

Thread-safe: the simulator's server runs in its own thread (or process) while tests and the demo read
and wait on this state from another.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
import uuid
from collections import deque
from typing import Literal

from pydantic import BaseModel, Field

FaultKind = Literal["429", "500", "400", "timeout"]
SimChannel = Literal["whatsapp", "instagram", "telegram"]


class SentMessage(BaseModel):
    """One send the SIMULATED provider accepted, as it arrived on the wire."""

    seq: int
    channel: SimChannel
    account: str = Field(description="phone_number_id, Instagram account id, or the bot id of the token")
    recipient: str
    text: str
    reply_to: str | None
    provider_message_id: str
    body: dict[str, object]
    received_at: float


class FaultSpec(BaseModel):
    """``POST /_sim/faults``: fail the next ``count`` provider calls (optionally of one channel only)."""

    kind: FaultKind
    count: int = Field(default=1, ge=1, le=10_000)
    retry_after_s: int = Field(default=1, ge=0, le=3600, description="Retry-After of a 429")
    delay_s: float = Field(default=30.0, ge=0, le=600, description="How long a 'timeout' keeps the call")
    channel: SimChannel | None = None


#: What a SIMULATED business account has until a test sets its templates.
DEFAULT_TEMPLATES: list[dict[str, object]] = [
    {
        "name": "support_followup",
        "language": "en_US",
        "status": "APPROVED",
        "category": "UTILITY",
        "components": [{"type": "BODY", "text": "Following up on your question: {{1}}"}],
        "id": "SIM-TPL-1",
    },
    {
        "name": "order_update",
        "language": "en_US",
        "status": "PENDING",
        "category": "UTILITY",
        "components": [{"type": "BODY", "text": "Your order {{1}} is {{2}}."}],
        "id": "SIM-TPL-2",
    },
]


class SimMedia(BaseModel):
    """A file the SIMULATED provider holds for a customer's message (what a media id points at)."""

    id: str
    data: bytes
    mime_type: str
    transcript: str | None = Field(
        default=None, description="What the SIMULATED transcription endpoint answers for these bytes"
    )
    sha256: str


class SimulatorState:
    """Recorded sends, queued faults, registered Telegram webhooks and the media customers 'sent'."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._sent: list[SentMessage] = []
        self._by_reply_to: dict[str, list[SentMessage]] = {}
        self._faults: deque[FaultSpec] = deque()
        self._seq = itertools.count(1)
        self.telegram_webhooks: dict[str, dict[str, object]] = {}
        self._media: dict[str, SimMedia] = {}
        self.callback_answers: list[dict[str, object]] = []
        self._signals: list[dict[str, object]] = []
        self._templates: dict[str, list[dict[str, object]]] = {}
        self._tickets: dict[str, dict[str, object]] = {}  # by Idempotency-Key

    def open_ticket(self, body: dict[str, object], *, idempotency_key: str) -> tuple[dict[str, object], bool]:
        """A SIMULATED helpdesk ticket for ``body``; the same key answers the same ticket (and False)."""
        with self._cond:
            found = self._tickets.get(idempotency_key)
            if found is not None:
                return found, False
            ticket = {"id": f"SIM-T-{1000 + len(self._tickets)}", **body}
            self._tickets[idempotency_key] = ticket
            self._cond.notify_all()
            return ticket, True

    def tickets(self) -> list[dict[str, object]]:
        """Tickets opened, oldest first."""
        with self._cond:
            return list(self._tickets.values())

    def templates(self, waba_id: str) -> list[dict[str, object]]:
        """The business account's message templates, as Graph lists them (a default set until set)."""
        with self._cond:
            return list(self._templates.get(waba_id, DEFAULT_TEMPLATES))

    def set_templates(self, waba_id: str, templates: list[dict[str, object]]) -> None:
        """Replace the business account's templates."""
        with self._cond:
            self._templates[waba_id] = list(templates)

    def record_signal(self, signal: dict[str, object]) -> None:
        """A read receipt or typing indicator the brand sent (apart from messages: no id, no text)."""
        with self._cond:
            self._signals.append({**signal, "received_at": time.time()})
            self._cond.notify_all()

    def signals(self) -> list[dict[str, object]]:
        """Read receipts and typing indicators, in arrival order."""
        with self._cond:
            return list(self._signals)

    def add_media(self, data: bytes, *, mime_type: str, transcript: str | None = None) -> SimMedia:
        """Hold ``data`` as a provider would for an inbound media message; its id fetches it."""
        media = SimMedia(
            id=f"{next(self._seq)}{uuid.uuid4().hex[:12]}",
            data=data,
            mime_type=mime_type,
            transcript=transcript,
            sha256=hashlib.sha256(data).hexdigest(),
        )
        with self._cond:
            self._media[media.id] = media
        return media

    def media(self, media_id: str) -> SimMedia | None:
        """A held file by id."""
        with self._cond:
            return self._media.get(media_id)

    def transcript_of(self, data: bytes) -> str | None:
        """The transcript registered with these exact bytes (the SIMULATED speech-to-text)."""
        digest = hashlib.sha256(data).hexdigest()
        with self._cond:
            return next((m.transcript for m in self._media.values() if m.sha256 == digest), None)

    def add_fault(self, spec: FaultSpec) -> None:
        """Queue a fault; faults are consumed in the order they were added."""
        with self._cond:
            self._faults.append(spec)

    def take_fault(self, channel: SimChannel) -> FaultSpec | None:
        """The fault for this call, if one is queued for its channel (uses up one of its ``count``)."""
        with self._cond:
            for spec in self._faults:
                if spec.channel in (None, channel):
                    remaining = spec.count - 1
                    if remaining == 0:
                        self._faults.remove(spec)
                    else:
                        index = self._faults.index(spec)
                        self._faults[index] = spec.model_copy(update={"count": remaining})
                    return spec
        return None

    def pending_faults(self) -> list[FaultSpec]:
        """Faults not used up yet."""
        with self._cond:
            return list(self._faults)

    def record(
        self,
        *,
        channel: SimChannel,
        account: str,
        recipient: str,
        text: str,
        reply_to: str | None,
        body: dict[str, object],
        id_prefix: str,
    ) -> SentMessage:
        """Store an accepted send and wake up waiters."""
        with self._cond:
            seq = next(self._seq)
            sent = SentMessage(
                seq=seq,
                channel=channel,
                account=account,
                recipient=recipient,
                text=text,
                reply_to=reply_to,
                provider_message_id=f"{id_prefix}{seq}",
                body=body,
                received_at=time.time(),
            )
            self._sent.append(sent)
            if reply_to is not None:
                self._by_reply_to.setdefault(reply_to, []).append(sent)
            self._cond.notify_all()
            return sent

    def sent(self, channel: SimChannel | None = None) -> list[SentMessage]:
        """Accepted sends in arrival order."""
        with self._cond:
            return [s for s in self._sent if channel in (None, s.channel)]

    def replies_to(self, message_id: str) -> list[SentMessage]:
        """Sends that quote ``message_id``, in arrival order (an index: no scan of every send)."""
        with self._cond:
            return list(self._by_reply_to.get(message_id, []))

    def clear(self) -> None:
        """Forget sends and faults."""
        with self._cond:
            self._sent.clear()
            self._by_reply_to.clear()
            self._signals.clear()
            self._faults.clear()

    def wait_for(
        self, count: int, *, timeout_s: float, channel: SimChannel | None = None
    ) -> list[SentMessage]:
        """Block until at least ``count`` sends (of ``channel``) arrived or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                found = [s for s in self._sent if channel in (None, s.channel)]
                left = deadline - time.monotonic()
                if len(found) >= count or left <= 0:
                    return found
                self._cond.wait(timeout=left)
