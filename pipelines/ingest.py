"""Bulk knowledge ingestion: one pipeline function for the CLI (and ``ray job submit``) and the worker.

``python -m pipelines.ingest --tenant T --brand B --source 's3://bucket/prefix' --source '/kb/**/*.md'``

:func:`run_ingest` lists the sources, then runs the stages of :mod:`pipelines.stages`
(ReadSources → ParseDocuments → ChunkDocuments, fused as PrepareDocuments → EmbedChunks → UpsertPoints)
on one of two engines:

* ``ray``: a Ray Data dataset; each stage is an actor pool with its threads pinned (:data:`PINNED_THREADS`):
  PrepareDocuments one actor reserving no CPU, EmbedChunks ``ingestion.embed_actors`` actors of one CPU
  (one per core; the model loaded once per actor). UpsertPoints runs as an actor when the vector
  store can be opened by any process (``QDRANT_URL`` set, or the Serve app's knowledge deployment is
  the writer), and in the driver when the embedded engine (Qdrant Edge) has to be opened here;
* ``local``: the same stage objects called batch by batch in this process (tests, tiny uploads).

Accounting is exact: every listed document ends either indexed or quarantined with its reason, and
the summary checks ``documents_in == indexed + quarantined`` before returning.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from common.config import Settings, get_settings
from common.db import repositories as repo
from common.db.session import make_engine, make_sessionmaker
from common.errors import AssistantError, InvalidInput, NotFound
from pipelines.sources import SourceItem, list_sources
from pipelines.stages import (
    Batch,
    EmbedChunks,
    PrepareDocuments,
    UpsertPoints,
    WriterMode,
    input_batch,
    rows,
)

ProgressFn = Callable[[int, int], None]

#: Environment of every Ray Data actor of a run: one intra-op thread per process. Two OpenMP threads per
#: process ran one MiniLM query ~25x slower than one on the 2-core VMs (docs/PERFORMANCE.md), and a
#: tokenizer's own thread pool would compete with the other actors for the same cores.
PINNED_THREADS = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class Engine(StrEnum):
    """Where the stages run."""

    RAY = "ray"
    LOCAL = "local"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceItemIn(_Model):
    """An explicit document (an uploaded blob): identity, location, declared type."""

    uri: str = Field(min_length=1, max_length=1024)
    location: str = Field(min_length=1)
    content_type: str | None = None


class IngestRequest(_Model):
    """What to ingest for which brand."""

    tenant_id: uuid.UUID
    brand_id: uuid.UUID
    sources: list[str] = Field(default_factory=list, description="Local paths/globs or s3:// prefixes")
    items: list[SourceItemIn] = Field(default_factory=list, description="Explicit documents (uploads)")
    force: bool = Field(default=False, description="Re-embed and rewrite every chunk")


class Quarantined(_Model):
    """A document that was not indexed, and why."""

    uri: str
    stage: str
    reason: str


class IngestSummary(_Model):
    """What one run did, counted exactly (``documents_in == documents_indexed + documents_quarantined``)."""

    documents_in: int
    documents_read: int
    documents_parsed: int
    documents_indexed: int
    documents_quarantined: int
    quarantined: list[Quarantined]
    chunks_total: int
    chunks_written: int
    chunks_unchanged: int
    chunks_deleted: int
    seconds: float


def run_ingest(
    request: IngestRequest,
    *,
    settings: Settings,
    engine: Engine = Engine.LOCAL,
    writer: WriterMode | None = None,
    progress: ProgressFn | None = None,
) -> IngestSummary:
    """Ingest the request's documents; raises only for failures of the system (retry the run)."""
    started = time.perf_counter()
    _check_brand(request, settings)
    items = _items(request, settings)
    mode = writer or choose_writer(settings)
    results: list[dict[str, Any]] = []
    report = progress or (lambda done, total: None)
    report(0, len(items))
    if items:
        batches = _run_ray if engine == Engine.RAY else _run_local
        for batch in batches(items, request=request, settings=settings, mode=mode):
            results.extend(rows(batch))
            report(len(results), len(items))
    return summarize(items, results, seconds=time.perf_counter() - started)


def choose_writer(settings: Settings) -> WriterMode:
    """``direct`` with a Qdrant server or when no Serve app owns the embedded engine; else ``serve``."""
    if settings.qdrant.url is not None:
        return WriterMode.DIRECT
    return WriterMode.SERVE if _serve_app_running(settings) else WriterMode.DIRECT


def _serve_app_running(settings: Settings) -> bool:
    import ray

    if not ray.is_initialized():
        return False
    from ray import serve

    try:
        apps = serve.status().applications
    except Exception:  # no Serve controller in this cluster: nothing owns the directory
        return False
    return settings.ray.app_name in apps


def _items(request: IngestRequest, settings: Settings) -> list[SourceItem]:
    found: dict[str, SourceItem] = {}
    for spec in request.sources:
        listed = list_sources(spec, s3=settings.s3)
        if not listed:
            raise NotFound(f"no documents at {spec}", details={"source": spec})
        found.update((i.uri, i) for i in listed)
    found.update(
        (i.uri, SourceItem(uri=i.uri, location=i.location, content_type=i.content_type))
        for i in request.items
    )
    if not found:
        raise InvalidInput("nothing to ingest: give sources or items")
    return [found[uri] for uri in sorted(found)]


def _check_brand(request: IngestRequest, settings: Settings) -> None:
    async def check() -> None:
        engine = make_engine(settings.database.url or "", pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session:
                brand = await repo.get_brand_profile(session, brand_id=request.brand_id)
        finally:
            await engine.dispose()
        if brand is None or brand.tenant_id != request.tenant_id:
            raise NotFound("unknown brand for this tenant", details={"brand_id": str(request.brand_id)})

    asyncio.run(check())


def _ids(request: IngestRequest) -> dict[str, str]:
    return {"tenant_id": str(request.tenant_id), "brand_id": str(request.brand_id)}


def _run_local(
    items: list[SourceItem], *, request: IngestRequest, settings: Settings, mode: WriterMode
) -> Iterator[Batch]:
    """The stages in this process, one batch of ``ingestion.batch_size`` documents at a time."""
    prepare = PrepareDocuments(settings, force=request.force, **_ids(request))
    embed = EmbedChunks(settings)
    upsert = UpsertPoints(settings, mode=mode.value, **_ids(request))
    try:
        size = settings.ingestion.batch_size
        for start in range(0, len(items), size):
            batch = input_batch(items[start : start + size])
            yield upsert(embed(prepare(batch)))
    finally:
        upsert.close()


def _run_ray(
    items: list[SourceItem], *, request: IngestRequest, settings: Settings, mode: WriterMode
) -> Iterator[Batch]:
    """The stages as a Ray Data dataset (see the module docstring for where UpsertPoints runs)."""
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(address=settings.ray.address, namespace=settings.ray.namespace, include_dashboard=False)
    size = settings.ingestion.batch_size
    common = {"batch_size": size, "batch_format": "numpy", "runtime_env": {"env_vars": PINNED_THREADS}}
    # The light stages reserve no CPU: reserving any would keep the last embedding actor (1 CPU each,
    # one per core) from being scheduled on a small node, and what they use is a few % of embedding's.
    light = {**common, "num_cpus": 0, "concurrency": 1}
    first = input_batch(items)
    ds: Any = ray.data.from_items(
        [dict(zip(first, values, strict=True)) for values in zip(*first.values(), strict=True)]
    )
    prepare_kwargs = {"settings": settings, "force": request.force, **_ids(request)}
    ds = ds.map_batches(PrepareDocuments, fn_constructor_kwargs=prepare_kwargs, **light)
    ds = ds.map_batches(
        EmbedChunks,
        fn_constructor_kwargs={"settings": settings},
        num_cpus=1,
        concurrency=settings.ingestion.embed_actors,
        **common,
    )
    upsert_kwargs = {"settings": settings, "mode": mode.value, **_ids(request)}
    if mode == WriterMode.SERVE or settings.qdrant.url is not None:
        ds = ds.map_batches(UpsertPoints, fn_constructor_kwargs=upsert_kwargs, **light)
        yield from ds.iter_batches(batch_size=size, batch_format="numpy")
        return
    # The embedded engine without a Serve app: only this process may open the directory.
    upsert = UpsertPoints(**upsert_kwargs)  # type: ignore[arg-type]
    try:
        for batch in ds.iter_batches(batch_size=size, batch_format="numpy"):
            yield upsert(batch)
    finally:
        upsert.close()


def summarize(items: list[SourceItem], results: Iterable[dict[str, Any]], *, seconds: float) -> IngestSummary:
    """Count the results; refuses (AssistantError) if a document went missing on the way."""
    done = list(results)
    failed = [Quarantined(uri=r["uri"], stage=r["stage"], reason=r["error"]) for r in done if r["error"]]
    indexed = [r for r in done if not r["error"]]
    if sorted(r["uri"] for r in done) != sorted(i.uri for i in items):
        raise AssistantError(
            "ingestion lost track of documents", details={"in": len(items), "out": len(done)}
        )
    return IngestSummary(
        documents_in=len(items),
        documents_read=len(items) - sum(1 for q in failed if q.stage == "read"),
        documents_parsed=len(items) - sum(1 for q in failed if q.stage in {"read", "parse"}),
        documents_indexed=len(indexed),
        documents_quarantined=len(failed),
        quarantined=sorted(failed, key=lambda q: q.uri),
        chunks_total=sum(int(r["chunk_total"]) for r in indexed),
        chunks_written=sum(int(r["written"]) for r in indexed),
        chunks_unchanged=sum(int(r["unchanged"]) for r in indexed),
        chunks_deleted=sum(int(r["deleted"]) for r in indexed),
        seconds=round(seconds, 3),
    )


def render_summary(summary: IngestSummary) -> str:
    """Human-readable summary printed by the CLI."""
    lines = [
        f"documents: {summary.documents_in} in, {summary.documents_read} read, "
        f"{summary.documents_parsed} parsed, {summary.documents_indexed} indexed, "
        f"{summary.documents_quarantined} quarantined",
        *(f"  quarantined {q.uri} [{q.stage}]: {q.reason}" for q in summary.quarantined),
        f"chunks: {summary.chunks_total} total, {summary.chunks_written} written, "
        f"{summary.chunks_unchanged} unchanged, {summary.chunks_deleted} deleted",
        f"seconds: {summary.seconds:.2f}",
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", required=True, type=uuid.UUID)
    parser.add_argument("--brand", required=True, type=uuid.UUID)
    parser.add_argument("--source", required=True, action="append", help="path/glob or s3://bucket/prefix")
    parser.add_argument("--engine", choices=[e.value for e in Engine], default=Engine.RAY.value)
    parser.add_argument("--writer", choices=[w.value for w in WriterMode], default=None)
    parser.add_argument("--force", action="store_true", help="re-embed and rewrite every chunk")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit code 0 when every document was indexed, 2 when some were quarantined."""
    from tqdm import tqdm

    args = _parser().parse_args(argv)
    request = IngestRequest(tenant_id=args.tenant, brand_id=args.brand, sources=args.source, force=args.force)
    bar = tqdm(total=0, unit="doc", desc="ingest", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        summary = run_ingest(
            request,
            settings=get_settings(),
            engine=Engine(args.engine),
            writer=WriterMode(args.writer) if args.writer else None,
            progress=progress,
        )
    except AssistantError as exc:
        bar.close()
        sys.stderr.write(f"ingestion failed ({exc.code}): {exc.message}\n")
        return 1
    bar.close()
    sys.stdout.write((summary.model_dump_json() if args.json else render_summary(summary)) + "\n")
    return 2 if summary.documents_quarantined else 0


if __name__ == "__main__":
    raise SystemExit(main())
