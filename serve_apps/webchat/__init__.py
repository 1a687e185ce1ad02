"""The web chat channel: widget token → brand, visitor identity, rate limits, SSE replies, the widget.

Mount with ``app.include_router(build_webchat_router(backend))``; see ``docs/WEBCHAT.md``.
"""

from __future__ import annotations

from serve_apps.webchat.routes import build_webchat_router

__all__ = ["build_webchat_router"]
