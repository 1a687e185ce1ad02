"""The Grafana dashboard queries only metrics that exist; helpers that feed the metrics record them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import ray.serve

from common import metrics
from common.metrics import REGISTRY
from pipelines.ingest import IngestSummary
from pipelines.worker import _count_summary

DASHBOARD = Path(__file__).resolve().parents[2] / "cluster" / "grafana" / "assistant-dashboard.json"
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]
    assert all(
        panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"] if "targets" in panel
    )
    return exprs


def base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in metrics.metric_names():
            return name.removesuffix(suffix)
    return name


def ray_serve_metric_names() -> set[str]:
    """Metric names Ray Serve defines (its source, f-string names expanded for HTTP)."""
    source = "\n".join(p.read_text() for p in (Path(ray.serve.__file__).parent / "_private").glob("*.py"))
    names = re.findall(r"""f?["'](serve_[a-z_{}]+)["']""", source)
    return {n.replace("{protocol_name}", "http") for n in names}


def test_dashboard_is_valid_json_and_queries_only_defined_metrics() -> None:
    exprs = expressions()
    ours = {base(m) for e in exprs for m in re.findall(r"\bema_[a-z_]+", e)}
    assert ours <= set(metrics.metric_names()), ours - set(metrics.metric_names())
    # Every metric this project defines has a panel.
    assert set(metrics.metric_names()) <= ours, set(metrics.metric_names()) - ours
    serve = {m for e in exprs for m in re.findall(r"\bray_(serve_[a-z_]+)", e)}
    assert serve, "the dashboard shows Ray Serve's own metrics"
    defined = ray_serve_metric_names()
    stripped = {next((m.removesuffix(s) for s in SUFFIXES if m.removesuffix(s) in defined), m) for m in serve}
    assert stripped <= defined, stripped - defined


def test_our_metrics_are_matched_with_and_without_the_ray_prefix() -> None:
    for expr in expressions():
        for match in re.finditer(r"ema_[a-z_]+", expr):
            assert expr[: match.start()].endswith('{__name__=~"(ray_)?'), expr


def test_ingestion_summary_is_counted_by_outcome_and_operation() -> None:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (
        value("ema_ingestion_documents_total", outcome="indexed"),
        value("ema_ingestion_documents_total", outcome="quarantined"),
        value("ema_ingestion_chunks_total", operation="written"),
        value("ema_ingestion_chunks_total", operation="deleted"),
        value("ema_ingestion_jobs_total", outcome="succeeded"),
    )
    summary = IngestSummary(
        documents_in=3,
        documents_read=3,
        documents_parsed=3,
        documents_indexed=2,
        documents_quarantined=1,
        quarantined=[],
        chunks_total=9,
        chunks_written=7,
        chunks_unchanged=2,
        chunks_deleted=4,
        seconds=1.0,
    )
    _count_summary(summary)
    after = (
        value("ema_ingestion_documents_total", outcome="indexed"),
        value("ema_ingestion_documents_total", outcome="quarantined"),
        value("ema_ingestion_chunks_total", operation="written"),
        value("ema_ingestion_chunks_total", operation="deleted"),
        value("ema_ingestion_jobs_total", outcome="succeeded"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 7, 4, 1]


def test_zero_increments_are_skipped_and_negative_ones_refused() -> None:
    class RayCounter:
        """Stands in for ray.util.metrics.Counter, which raises on value <= 0."""

        def __init__(self) -> None:
            self.calls: list[float] = []

        def inc(self, value: float, tags: dict[str, str]) -> None:
            if value <= 0:
                raise ValueError(f"value must be >0, got {value}")
            self.calls.append(value)

    counter = RayCounter()
    saved = metrics._ray
    metrics._ray = {name: counter for name in metrics.metric_names()}
    try:
        metrics.inc("ema_ingestion_chunks_total", 0.0, operation="deleted")
        metrics.inc("ema_ingestion_chunks_total", 2.0, operation="deleted")
        with pytest.raises(ValueError, match="only go up"):
            metrics.inc("ema_ingestion_chunks_total", -1.0, operation="deleted")
    finally:
        metrics._ray = saved
    assert counter.calls == [2.0]
