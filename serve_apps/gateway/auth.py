"""The platform API token (``API__TOKEN``), compared in constant time."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Depends, Request

from common.errors import Unauthorized
from serve_apps.gateway.backend import GatewayBackend


def api_guard(backend: GatewayBackend) -> Any:
    """A FastAPI dependency enforcing ``API__TOKEN`` (when set) on the platform API."""

    async def check(request: Request) -> None:
        expected = backend.settings.api.token
        if expected is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            token.encode(), expected.get_secret_value().encode()
        )
        if not ok:
            raise Unauthorized("missing or invalid API token", details={"header": "Authorization: Bearer"})

    return Depends(check)
