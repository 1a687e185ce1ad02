"""The gateway's typed backend matches what the Serve deployments behind its handles really serve.

mypy checks the in-process backend (the objects themselves) against the Protocols in
:mod:`serve_apps.gateway.backend`; over Serve the gateway holds handle proxies cast to those Protocols,
which mypy cannot check. This test does: every Protocol method is a coroutine function of the
deployment (its own, or its delegation target's) with the same parameters.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from common.conversation.orchestrator import MessageOrchestrator
from common.knowledge.service import KnowledgeService
from deployments.knowledge import KnowledgeIndexDeployment
from deployments.orchestrator import OrchestratorDeployment
from serve_apps.gateway.backend import Conversations, KnowledgeIndex


def _protocol_methods(protocol: type[Any]) -> dict[str, Any]:
    names = {
        name
        for klass in protocol.__mro__
        if klass not in (object,) and getattr(klass, "_is_protocol", False)
        for name, value in vars(klass).items()
        if not name.startswith("_") and inspect.isfunction(value)
    }
    return {name: getattr(protocol, name) for name in sorted(names)}


def _served(deployment: type[Any], target: type[Any], name: str) -> Any:
    """What a handle call ``name`` runs: the deployment's own method, else the delegation target's."""
    cls = getattr(deployment, "func_or_class", deployment)  # @serve.deployment wraps the class
    own = vars(cls).get(name)
    if own is not None:
        return inspect.unwrap(own)
    return getattr(target, name, None)


def _parameters(fn: Any) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]


@pytest.mark.parametrize(
    ("protocol", "deployment", "target"),
    [
        (Conversations, OrchestratorDeployment, MessageOrchestrator),
        (KnowledgeIndex, KnowledgeIndexDeployment, KnowledgeService),
    ],
    ids=["orchestrator", "knowledge"],
)
def test_deployment_serves_every_protocol_method(
    protocol: type[Any], deployment: Any, target: type[Any]
) -> None:
    methods = _protocol_methods(protocol)
    assert methods, "the Protocol declares no methods"
    for name, declared in methods.items():
        served = _served(deployment, target, name)
        assert served is not None, f"{deployment} serves no {name!r}"
        assert inspect.iscoroutinefunction(served), f"{name!r} must be async (awaited through the proxy)"
        assert _parameters(served) == _parameters(declared), f"{name!r}: parameters differ from the Protocol"


def test_conversations_includes_intake() -> None:
    """The orchestrator is also an intake (the in-process backend uses one object for both)."""
    assert {"accept", "channel_route"} <= set(_protocol_methods(Conversations))
