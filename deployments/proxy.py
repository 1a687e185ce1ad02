"""Make a deployment handle look like the plain object it serves, and carry the trace across it.

``HandleProxy(handle).accept(msg)`` awaits ``handle.accept.remote(msg)``; the in-process wiring passes
the real object instead. Routers and workers therefore call ``backend.orchestrator.accept(...)`` the same
way in both worlds, and a method added to :class:`common.conversation.orchestrator.MessageOrchestrator`
needs no
change in the deployment (see :class:`Delegating`).

Trace context crosses the handle as one reserved keyword argument, :data:`TRACE_KWARG`: the proxy adds
the current W3C carrier (only when there is one, so untraced calls are unchanged), and the receiving
side (:class:`TraceReceiving`, which :class:`Delegating` extends) pops it and runs the method inside a
child span ``serve.<DeploymentClass>.<method>``. Application code never sees the argument.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from ray.serve.handle import DeploymentHandle

from common import telemetry
from common.observability import continued

#: Reserved keyword argument carrying the caller's trace context (a W3C carrier dict) over a handle.
TRACE_KWARG = "_trace_context"
#: Methods Serve itself calls (no caller context to continue).
SERVE_HOOKS = frozenset({"check_health", "reconfigure"})


class HandleProxy:
    """Async attribute access over a Serve deployment handle; the caller's trace travels along."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self._handle = handle

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)
        method = getattr(self._handle, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            carrier = telemetry.inject()
            if carrier:
                kwargs[TRACE_KWARG] = carrier
            return await method.remote(*args, **kwargs)

        return call


def continue_trace(fn: Callable[..., Any], *, span_name: str) -> Callable[..., Any]:
    """``fn`` accepting :data:`TRACE_KWARG`: popped, and ``fn`` runs in a child span of that context.

    Sync functions stay sync and coroutine functions stay coroutine functions (Serve treats them
    differently).
    """
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def call_async(*args: Any, **kwargs: Any) -> Any:
            carrier: dict[str, str] | None = kwargs.pop(TRACE_KWARG, None)
            if not carrier:
                return await fn(*args, **kwargs)
            with continued(carrier), telemetry.span(span_name):
                return await fn(*args, **kwargs)

        return call_async

    @functools.wraps(fn)
    def call_sync(*args: Any, **kwargs: Any) -> Any:
        carrier: dict[str, str] | None = kwargs.pop(TRACE_KWARG, None)
        if not carrier:
            return fn(*args, **kwargs)
        with continued(carrier), telemetry.span(span_name):
            return fn(*args, **kwargs)

    return call_sync


class TraceReceiving:
    """Mixin for deployments: public methods defined on the class accept :data:`TRACE_KWARG`."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if name.startswith("_") or name in SERVE_HOOKS or not inspect.isfunction(value):
                continue
            setattr(cls, name, continue_trace(value, span_name=f"serve.{cls.__name__}.{name}"))


class Delegating(TraceReceiving):
    """Mixin for deployments: public methods of ``self._target`` are callable through the handle."""

    _target: Any

    def __getattr__(self, name: str) -> Any:
        # Private names (and anything looked up before __init__ set _target) are not delegated.
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr
        return continue_trace(attr, span_name=f"serve.{type(self).__name__}.{name}")
