"""Make a deployment handle look like the plain object it serves.

``HandleProxy(handle).accept(msg)`` awaits ``handle.accept.remote(msg)``; the in-process wiring passes
the real object instead. Routers and workers therefore call ``backend.orchestrator.accept(...)`` the same
way in both worlds, and a method added to :class:`common.orchestration.MessageOrchestrator` needs no
change in the deployment (see :class:`Delegating`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ray.serve.handle import DeploymentHandle


class HandleProxy:
    """Async attribute access over a Serve deployment handle."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self._handle = handle

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)
        method = getattr(self._handle, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await method.remote(*args, **kwargs)

        return call


class Delegating:
    """Mixin for deployments: public methods of ``self._target`` are callable through the handle."""

    _target: Any

    def __getattr__(self, name: str) -> Any:
        # Private names (and anything looked up before __init__ set _target) are not delegated.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._target, name)
