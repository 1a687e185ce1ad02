"""Load benchmark: N concurrent conversations per brand through Ray Serve vs the same pipeline in-process.

    python -m bench.load --users-per-brand 50 --brands 2 --duration 60     (what `make load` runs)

One run, same machine, same LLM stub (fixed latency, bench/llm_stub.py), same brands and knowledge:

1. **Serve**: the full application (gateway → orchestrator → knowledge → embedder, orchestrator → llm)
   under a headless Locust run (tests/load/locustfile.py): multi-turn conversations with think time.
2. **Baseline**: the same message pipeline (``MessageOrchestrator.handle``) called in-process by the
   same number of concurrent conversations with the same think time, no Serve, no HTTP.

It prints p50/p95/p99 end-to-end latency minus the stub's latency (the platform's own cost),
throughput, error rate and the Serve/baseline ratio, writes CSV/HTML (Locust) and a Markdown summary
under ``--report-dir``, and exits non-zero when a threshold fails (error rate > 0, p95 overhead ratio
> ``--max-overhead-ratio``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from bench.llm_stub import build_stub_app
from bench.questions import QUESTIONS
from common.config import ServiceEndpoints, Settings
from common.db.migrate import upgrade
from common.db.session import make_engine, make_sessionmaker
from common.domain import BrandProfile, Channel, InboundMessage
from pipelines.demo import demo_documents, seed_demo_brand


@dataclass(frozen=True)
class Summary:
    """Latency figures of one phase, in milliseconds, with the stub's latency subtracted."""

    name: str
    requests: int
    failures: int
    rps: float
    p50: float
    p95: float
    p99: float

    def line(self) -> str:
        """One Markdown table row."""
        rate = self.failures / self.requests if self.requests else 1.0
        return (
            f"| {self.name} | {self.requests} | {rate:.2%} | {self.rps:.1f} | "
            f"{self.p50:.0f} | {self.p95:.0f} | {self.p99:.0f} |"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_stub(port: int, latency_ms: float) -> uvicorn.Server:
    server = uvicorn.Server(
        uvicorn.Config(
            build_stub_app(latency_ms=latency_ms), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return server


async def _seed_brands(database_url: str, count: int) -> list[BrandProfile]:
    engine = make_engine(database_url, pool_size=2)
    sessionmaker = make_sessionmaker(engine)
    try:
        demo = await seed_demo_brand(sessionmaker)
        brands = [demo.brand]
        from common.db import repositories as repo

        for i in range(1, count):
            async with sessionmaker() as session:
                brand = await repo.upsert_brand(
                    session,
                    brand_id=uuid.uuid5(demo.brand.id, f"load-{i}"),
                    tenant_id=demo.tenant.id,
                    slug=f"{demo.brand.slug}-load-{i}",
                    name=f"{demo.brand.name} #{i}",
                    persona=demo.brand.persona,
                )
                await session.commit()
            brands.append(brand)
        return brands
    finally:
        await engine.dispose()


def _locust(base_url: str, brands: list[BrandProfile], *, users: int, duration: int, report: Path) -> Summary:
    env = {**os.environ, "LOAD_BRANDS": ",".join(str(b.id) for b in brands), "LOAD_MAX_ERROR_RATE": "0"}
    cmd = [
        sys.executable, "-m", "locust", "-f", "tests/load/locustfile.py", "--headless",
        "-u", str(users), "-r", str(max(1, users // 10)), "--run-time", f"{duration}s",
        "--host", base_url, "--csv", str(report / "serve"), "--html", str(report / "serve.html"),
        "--only-summary",
    ]  # fmt: skip
    subprocess.run(cmd, env=env, check=False, timeout=duration + 120)  # noqa: S603 - our own command
    with (report / "serve_stats.csv").open() as fh:
        row = next(r for r in csv.DictReader(fh) if r["Name"] == "Aggregated")
    return Summary(
        name="Ray Serve (HTTP)",
        requests=int(row["Request Count"]),
        failures=int(row["Failure Count"]),
        rps=float(row["Requests/s"]),
        p50=float(row["50%"]),
        p95=float(row["95%"]),
        p99=float(row["99%"]),
    )


async def _baseline(
    settings: Settings, endpoints: ServiceEndpoints, brands: list[BrandProfile], *, users: int, duration: int
) -> Summary:
    from serve_apps.inprocess import InProcessBackend

    backend = InProcessBackend(settings, endpoints)
    latencies: list[float] = []
    failures = 0
    stop_at = time.monotonic() + duration

    async def conversation(brand: BrandProfile) -> None:
        nonlocal failures
        while time.monotonic() < stop_at:
            customer = f"base-{uuid.uuid4().hex[:12]}"
            for _ in range(random.randint(2, 4)):  # noqa: S311 - same shape as the Locust profile
                if time.monotonic() >= stop_at:
                    return
                started = time.perf_counter()
                try:
                    reply = await backend.orchestrator.handle(
                        InboundMessage(
                            brand_id=brand.id,
                            channel=Channel.WEBCHAT,
                            customer_id=customer,
                            text=random.choice(QUESTIONS),  # noqa: S311
                        )
                    )
                    if not reply.text:
                        failures += 1
                except Exception:  # the figure counts failures; the run goes on
                    failures += 1
                latencies.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(random.uniform(1.0, 3.0))  # noqa: S311

    try:
        started = time.monotonic()
        await asyncio.gather(*(conversation(brands[i % len(brands)]) for i in range(users)))
        elapsed = time.monotonic() - started
    finally:
        await backend.aclose()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return Summary(
        "in-process baseline", len(latencies), failures, len(latencies) / elapsed, q[49], q[94], q[98]
    )


def _minus(summary: Summary, stub_ms: float) -> Summary:
    return Summary(
        summary.name,
        summary.requests,
        summary.failures,
        summary.rps,
        max(summary.p50 - stub_ms, 0.0),
        max(summary.p95 - stub_ms, 0.0),
        max(summary.p99 - stub_ms, 0.0),
    )


def main(argv: list[str] | None = None) -> int:
    """Run both phases and report; exit 1 when a threshold fails."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--brands", type=int, default=2)
    parser.add_argument("--users-per-brand", type=int, default=50)
    parser.add_argument("--duration", type=int, default=60, help="seconds per phase")
    parser.add_argument("--llm-latency-ms", type=float, default=200.0)
    parser.add_argument("--max-overhead-ratio", type=float, default=1.5)
    parser.add_argument("--report-dir", type=Path, default=Path("test-artifacts/load"))
    opts = parser.parse_args(argv)
    opts.report_dir.mkdir(parents=True, exist_ok=True)
    users = opts.brands * opts.users_per_brand

    stub_port, http_port = _free_port(), _free_port()
    stub = _start_stub(stub_port, opts.llm_latency_ms)
    llm_env = {
        "LLM_PROVIDER": "openai",
        "LLM_BASE_URL": f"http://127.0.0.1:{stub_port}/v1",
        "LLM_MODEL": "stub",
    }
    os.environ.update(llm_env)
    os.environ.setdefault("DATA_DIR", str(opts.report_dir / "data"))
    from serve_apps.launcher import backing_services, start_serve, stop_serve

    base = Settings()
    settings = base.model_copy(update={"ray": base.ray.model_copy(update={"http_port": http_port})})
    with backing_services(settings) as stack:
        upgrade(stack.endpoints.database_url)
        brands = asyncio.run(_seed_brands(stack.endpoints.database_url, opts.brands))
        try:
            base_url = start_serve(settings, stack.endpoints)
            for brand in brands:
                httpx.post(
                    f"{base_url}/v1/brands/{brand.id}/knowledge",
                    json=demo_documents().model_dump(mode="json"),
                    timeout=300,
                ).raise_for_status()
            serve_summary = _locust(
                base_url, brands, users=users, duration=opts.duration, report=opts.report_dir
            )
        finally:
            stop_serve()
        baseline = asyncio.run(
            _baseline(settings, stack.endpoints, brands, users=users, duration=opts.duration)
        )
    stub.should_exit = True

    serve_net = _minus(serve_summary, opts.llm_latency_ms)
    base_net = _minus(baseline, opts.llm_latency_ms)
    ratio = serve_net.p95 / base_net.p95 if base_net.p95 else float("inf")
    report = "\n".join(
        [
            f"Load: {opts.brands} brands x {opts.users_per_brand} concurrent conversations, "
            f"{opts.duration} s per phase, LLM stub {opts.llm_latency_ms:.0f} ms (subtracted below).",
            "",
            "| phase | requests | errors | req/s | p50 ms | p95 ms | p99 ms |",
            "|---|---|---|---|---|---|---|",
            serve_net.line(),
            base_net.line(),
            "",
            f"Platform overhead p95 ratio (Serve / in-process): {ratio:.2f} "
            f"(target < {opts.max_overhead_ratio})",
        ]
    )
    print(report)
    (opts.report_dir / "summary.md").write_text(report + "\n", encoding="utf-8")
    failed = serve_summary.failures > 0 or ratio > opts.max_overhead_ratio
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
