"""Trace context across a deployment handle, without Ray: HandleProxy adds it, Delegating continues it."""

from __future__ import annotations

from typing import Any

import pytest

from common import telemetry
from common.config import TelemetrySettings
from common.observability import continued, message_received, received_at
from deployments.proxy import TRACE_KWARG, Delegating, HandleProxy, TraceReceiving
from tests.fakes.serve import FakeHandle


@pytest.fixture(name="spans")
def spans_fixture():
    telemetry.configure_tracing(TelemetrySettings(exporter="memory"))
    exporter = telemetry.memory_exporter()
    exporter.clear()
    return exporter


class Service:
    """The plain object a deployment delegates to."""

    async def work(self, x: int) -> int:
        with telemetry.span("service.work"):
            return x * 2

    def info(self) -> str:
        return "sync"


class ServiceDeployment(Delegating):
    def __init__(self) -> None:
        self._target = Service()

    async def own(self, y: int) -> int:
        with telemetry.span("own.inner"):
            return y + 1


class ModelDeployment(TraceReceiving):
    def size(self) -> int:
        return 3

    async def check_health(self) -> None:
        return None


def by_name(spans) -> dict[str, Any]:
    return {s.name: s for s in spans.get_finished_spans()}


async def test_delegating_continues_the_callers_trace_in_a_child_span(spans) -> None:
    deployment = ServiceDeployment()
    with telemetry.span("caller") as caller:
        carrier = telemetry.inject()
    assert await deployment.work(3, **{TRACE_KWARG: carrier}) == 6
    assert await deployment.own(1, **{TRACE_KWARG: carrier}) == 2
    found = by_name(spans)
    hop, inner = found["serve.ServiceDeployment.work"], found["service.work"]
    trace_id = caller.get_span_context().trace_id
    assert hop.context.trace_id == inner.context.trace_id == trace_id
    assert hop.parent.span_id == caller.get_span_context().span_id
    assert inner.parent.span_id == hop.context.span_id
    own_hop = found["serve.ServiceDeployment.own"]
    assert own_hop.parent.span_id == caller.get_span_context().span_id
    assert found["own.inner"].parent.span_id == own_hop.context.span_id


async def test_without_the_reserved_argument_behaviour_is_unchanged(spans) -> None:
    deployment = ServiceDeployment()
    assert await deployment.work(4) == 8
    assert deployment.info() == "sync"
    assert deployment.info(**{TRACE_KWARG: {}}) == "sync"  # an empty carrier is dropped, not passed on
    assert ModelDeployment().size() == 3
    assert [s.name for s in spans.get_finished_spans()] == ["service.work"]  # no hop span
    with pytest.raises(AttributeError):
        _ = deployment._private


def test_sync_methods_and_serve_hooks(spans) -> None:
    with telemetry.span("caller"):
        carrier = telemetry.inject()
    assert ModelDeployment().size(**{TRACE_KWARG: carrier}) == 3
    assert "serve.ModelDeployment.size" in by_name(spans)
    # Serve calls its hooks itself: they are left as defined.
    assert ModelDeployment.check_health.__qualname__ == "ModelDeployment.check_health"


async def test_handle_proxy_adds_the_current_context_only_when_there_is_one(spans) -> None:
    handle = FakeHandle()
    proxy = HandleProxy(handle)  # type: ignore[arg-type]
    assert await proxy.work(1) == "ok"
    assert handle.calls[-1] == ((1,), {})
    with telemetry.span("caller") as caller:
        await proxy.work(2, flag=True)
    args, kwargs = handle.calls[-1]
    assert args == (2,) and kwargs["flag"] is True
    carried = kwargs[TRACE_KWARG]
    assert f"{caller.get_span_context().trace_id:032x}" in carried["traceparent"]
    # ...and the receiving side continues it:
    await ServiceDeployment().work(1, **{TRACE_KWARG: carried})
    assert by_name(spans)["serve.ServiceDeployment.work"].parent.span_id == caller.get_span_context().span_id


async def test_receipt_time_travels_as_baggage(spans) -> None:
    with message_received(), telemetry.span("webhook"):
        carrier = telemetry.inject()
    stamped = received_at(carrier)
    assert stamped is not None and "baggage" in carrier
    with continued(carrier):  # a consumer re-injects what it received: the stamp survives the hop
        assert received_at(telemetry.inject()) == stamped
    assert received_at({}) is None
    assert received_at({"baggage": "ema.received_at=garbage"}) is None
