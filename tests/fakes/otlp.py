"""A local OTLP/HTTP trace receiver: what an OpenTelemetry collector's ``/v1/traces`` accepts.

Replicas export with the real ``OTLPSpanExporter`` (protobuf over HTTP); this server decodes each
``ExportTraceServiceRequest`` and keeps the spans and the request headers, so a test can rebuild the
span tree of one message across processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any] = field(default_factory=dict)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class OtlpReceiver:
    """``with OtlpReceiver() as rx:`` serves on a free local port; ``rx.endpoint`` is the traces URL."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.headers: list[dict[str, str]] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                request = ExportTraceServiceRequest.FromString(body)
                spans = [
                    ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        attributes={a.key: _value(a.value) for a in span.attributes},
                    )
                    for resource_spans in request.resource_spans
                    for scope_spans in resource_spans.scope_spans
                    for span in scope_spans.spans
                ]
                with receiver._cond:
                    receiver.spans.extend(spans)
                    receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                    receiver._cond.notify_all()
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: Any) -> None:  # quiet
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_until(
        self, done: Callable[[list[ReceivedSpan]], bool], *, timeout_s: float
    ) -> list[ReceivedSpan]:
        """Every span received so far, once ``done(spans)`` holds or ``timeout_s`` has passed."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not done(self.spans) and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(timeout=left)
            return list(self.spans)
