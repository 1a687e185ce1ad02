"""The gateway: the system's HTTP front door (channel webhooks, web chat, agent and platform APIs).

Modules, from the bottom up (none imports :mod:`.app`, so there is no cycle to hide):

* :mod:`.backend`: what routes need from the rest of the system, as typed Protocols.
* :mod:`.errors`: our errors (and Ray-wrapped ones) to ``{"error": {...}}`` bodies.
* :mod:`.middleware`: body-size limit, the canonical request log line and root span.
* :mod:`.auth`: the platform API token.
* :mod:`.readiness`: the Postgres and Redis checks behind ``/readyz``.
* :mod:`.messages`, :mod:`.knowledge`, :mod:`.agents`, :mod:`.webhooks` (channel webhooks),
  :mod:`.webchat`: the route groups, each taking the backend.
* :mod:`.app`: builds the FastAPI app from a backend and mounts every route group.
* :mod:`.deployment`: the Serve ingress deployment (the backend over deployment handles).
"""
