"""The web chat channel: widget token → brand, visitor identity, rate limits, SSE replies, the widget.

Its routes are :mod:`serve_apps.gateway.webchat`; see ``docs/WEBCHAT.md``.
"""
