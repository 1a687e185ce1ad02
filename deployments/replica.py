"""What every replica does first: resolve its settings, logging, tracing and metrics, and its CPU priority.

The gateway answers webhooks and web chat with one transaction and an XADD; everything behind the
streams (drafting, retrieval, embedding, generation, delivery, ingestion) can wait a few milliseconds
for a CPU. On a node where the gateway shares cores with those replicas (a laptop, the 2-core CI VM, a
small Kubernetes node), the kernel's scheduler otherwise shares the CPU evenly, so a burst of drafting
work delays every acknowledgement behind it and providers see slow or timed-out webhooks. Background
replicas therefore lower their own priority (``RAY__BACKGROUND_NICE``, default 10: the gateway gets
about 9 of every 10 contested time slices); with CPU to spare, niceness changes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from common import metrics
from common.config import ServiceEndpoints, Settings, get_settings
from common.logging import configure_logging, get_logger
from common.telemetry import configure_tracing

log = get_logger(__name__)

#: Ray Serve's request path on one event loop per process. By default a replica runs user code on a
#: second thread with its own loop, and every deployment handle routes on a third loop, so each hop
#: crosses threads several times, and each crossing waits for the GIL (5 ms switch interval when
#: another thread holds it) and, on a busy node, for a CPU. Measured on the idle 2-core VM: an HTTP
#: health check through the proxy 12.2 → 6.6 ms, a whole web chat turn (five hops) 137 → 93 ms
#: (docs/PERFORMANCE.md). Ray reads these at import, in every Ray process, so they are environment
#: variables: the launcher sets them for a Ray it starts (``setdefault``: an operator's value wins), the
#: Helm values for a cluster's pods. Code that calls a handle from a plain thread (the ingestion
#: pipeline's writer) keeps a separate router loop for that handle.
SERVE_LATENCY_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
}


def start_replica(endpoints: ServiceEndpoints, *, background: bool) -> Settings:
    """Settings for this replica (pointed at ``endpoints``), with logging, tracing and Ray metrics set up.

    ``background`` replicas serve the streams, not the customers' HTTP requests: they lower their
    CPU priority by ``settings.ray.background_nice``.
    """
    settings = endpoints.apply(get_settings())
    configure_logging(level=settings.log_level, json=settings.log_json)
    configure_tracing(settings.telemetry)
    metrics.use_ray_metrics()
    if background:
        lower_priority(settings.ray.background_nice)
    return settings


def lower_priority(niceness: int) -> int:
    """Raise the nice value of every thread of this process to ``niceness`` (never lowers it).

    On Linux the nice value belongs to each thread, not to the process, and a Ray worker has started
    its gRPC and event-loop threads before user code runs; each one is set, and threads started later
    inherit the value of the thread that starts them. Returns how many threads were changed.
    """
    if niceness <= 0:
        return 0
    tasks = Path("/proc/self/task")
    tids = [int(p.name) for p in tasks.iterdir()] if tasks.is_dir() else [0]
    changed = 0
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
                changed += 1
        except (ProcessLookupError, PermissionError) as exc:
            # A thread that ended meanwhile, or a platform that refuses: priority is an optimisation.
            log.debug("priority_unchanged", tid=tid, reason=type(exc).__name__)
    log.info("replica_priority_lowered", niceness=niceness, threads=changed)
    return changed
