"""TEST DOUBLE of a Ray Serve ``DeploymentHandle``, for code that only calls ``handle.<method>.remote``."""

from __future__ import annotations

from typing import Any


class FakeMethod:
    def __init__(self, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> None:
        self.calls = calls

    async def remote(self, *args: Any, **kwargs: Any) -> str:
        self.calls.append((args, kwargs))
        return "ok"


class FakeHandle:
    """Stands in for a DeploymentHandle: ``handle.work.remote(...)`` records its arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> FakeMethod:
        return FakeMethod(self.calls)
