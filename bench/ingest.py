"""Ingestion benchmark: the Ray Data pipeline vs the bare embedding model, and retrieval at 50,000 chunks.

    python -m bench.ingest                      (what `make bench-ingest` runs)
    python -m bench.ingest --docs 220 --retrieval-chunks 50000 --small-brand-chunks 500 --queries 100

All figures come from one run on one machine:

1. **Pipeline**: a generated corpus (``--docs`` Markdown files of ``--sections`` sections; each section
   is one chunk) ingested by :func:`pipelines.ingest.run_ingest` on the Ray Data engine into a fresh
   embedded Qdrant (Edge) directory (listing, reading, parsing, chunking, embedding in ``--actors``
   EmbedChunks actors, upserting, Postgres sync). Two rates: *end to end* (the whole run, actor starts
   and model loads included) and *steady state* (from the first batch of documents the driver gets back
   to the last one, so actor start-up and the first batch are outside it). ``ray.init`` is done before
   the clock starts and reported separately.
2. **Bare model**: the same chunk texts embedded by one ``SentenceTransformer`` in this process with
   ``torch.set_num_threads(1)`` (model load excluded): chunks/s, and the pipeline/bare ratios. Then the
   machine's own ceiling: two such processes at once, each on half the texts (model loads excluded,
   both start together) — what two cores give right now, with whatever else runs on the machine.
3. **Retrieval** (:mod:`bench.retrieval`): a brand of ``--retrieval-chunks`` chunks (default 50,000) and
   a small brand of ``--small-brand-chunks`` next to it on the default engine (Qdrant Edge), with real
   all-MiniLM-L6-v2 embeddings of generated text (cached under ``DATA_DIR/bench``: the first run embeds
   for ~5 minutes on one core). p50/p95 of dense and hybrid search, with and without the query
   embedding, before and after the HNSW build, and the recall of the indexed search against exact.

Needs a Postgres the run may create a database on (``--pg-url``, default the local one); the database
and the Qdrant directories are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import retrieval

_WORDS = [
    "order",
    "shipping",
    "return",
    "refund",
    "warranty",
    "store",
    "delivery",
    "tracking",
    "payment",
    "invoice",
    "size",
    "colour",
    "tent",
    "jacket",
    "boot",
    "backpack",
    "exchange",
    "voucher",
    "account",
    "password",
    "address",
    "courier",
    "pickup",
    "weekend",
    "holiday",
    "repair",
    "battery",
    "lantern",
    "stove",
    "sleeping",
    "bag",
    "waterproof",
    "breathable",
    "guarantee",
    "discount",
    "member",
]


def _sentence(rng: random.Random, words: int = 14) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."


def write_corpus(directory: Path, *, docs: int, sections: int, seed: int = 7) -> None:
    """``docs`` Markdown files of ``sections`` short sections (one chunk each)."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible corpus, not secrets
    for d in range(docs):
        parts = [f"# Policy {d}"]
        for s in range(sections):
            parts.append(f"## Topic {d}.{s}\n\n{_sentence(rng)} {_sentence(rng)} {_sentence(rng)}")
        (directory / f"doc{d:04d}.md").write_text("\n\n".join(parts), encoding="utf-8")


def _database(pg_url: str) -> tuple[str, str]:
    import psycopg

    from common.db import migrate

    name = f"ema_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # generated name, not user input
    url = pg_url.rsplit("/", 1)[0] + f"/{name}"
    url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    migrate.upgrade(url)
    return name, url


def _drop(pg_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _brand(database_url: str) -> tuple[uuid.UUID, uuid.UUID]:
    from common.db import repositories as repo
    from common.db.session import make_engine, make_sessionmaker
    from common.domain import Persona

    tenant_id, brand_id = uuid.uuid4(), uuid.uuid4()

    async def seed() -> None:
        engine = make_engine(database_url, pool_size=1)
        async with make_sessionmaker(engine)() as session:
            await repo.upsert_tenant(session, tenant_id=tenant_id, slug="bench", name="Bench")
            await repo.upsert_brand(
                session, brand_id=brand_id, tenant_id=tenant_id, slug="bench", name="Bench", persona=Persona()
            )
            await session.commit()
        await engine.dispose()

    asyncio.run(seed())
    return tenant_id, brand_id


@dataclass(frozen=True)
class PipelineRun:
    """What one Ray Data run over the generated corpus took."""

    chunks: int
    seconds: float
    init_s: float
    steady_chunks: float
    steady_s: float


def pipeline_rate(args: argparse.Namespace, database_url: str, work: Path) -> PipelineRun:
    """End-to-end and steady-state figures of a Ray Data run over the generated corpus."""
    import ray

    from common.config import Settings
    from pipelines.ingest import Engine, IngestRequest, run_ingest

    corpus = work / "corpus"
    corpus.mkdir()
    write_corpus(corpus, docs=args.docs, sections=args.sections)
    tenant_id, brand_id = _brand(database_url)
    settings = Settings()
    settings = settings.model_copy(
        update={
            "database": settings.database.model_copy(update={"url": database_url}),
            "qdrant": settings.qdrant.model_copy(update={"url": None, "path": work / "qdrant-pipeline"}),
            "ingestion": settings.ingestion.model_copy(
                update={"embed_actors": args.actors, "batch_size": args.batch_docs}
            ),
        }
    )
    started = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - started
    marks: list[tuple[float, int]] = []  # (time, documents done) per batch back in the driver
    try:
        request = IngestRequest(tenant_id=tenant_id, brand_id=brand_id, sources=[str(corpus / "*.md")])
        started = time.perf_counter()
        summary = run_ingest(
            request,
            settings=settings,
            engine=Engine.RAY,
            progress=lambda done, total: marks.append((time.perf_counter(), done)),
        )
        seconds = time.perf_counter() - started
    finally:
        ray.shutdown()
    if summary.documents_quarantined:
        raise SystemExit(f"bench corpus had quarantined documents: {summary.quarantined}")
    (t_first, d_first), (t_last, d_last) = marks[1], marks[-1]  # marks[0] is the (0, total) report
    per_doc = summary.chunks_written / summary.documents_in
    return PipelineRun(
        chunks=summary.chunks_written,
        seconds=seconds,
        init_s=init_s,
        steady_chunks=(d_last - d_first) * per_doc,
        steady_s=t_last - t_first,
    )


def corpus_texts(corpus: Path) -> list[str]:
    """The embedding texts of the generated corpus, chunked as the pipeline chunks them."""
    from common.config import Settings
    from common.knowledge.chunking import MARKDOWN, chunk_document, embedding_text
    from common.knowledge.embeddings import token_counter

    settings = Settings()
    count = token_counter(settings.embeddings)
    texts: list[str] = []
    for path in sorted(corpus.glob("*.md")):
        chunks = chunk_document(
            path.read_text(encoding="utf-8"),
            content_type=MARKDOWN,
            count_tokens=count,
            chunk_tokens=settings.retrieval.chunk_tokens,
            overlap_tokens=settings.retrieval.chunk_overlap_tokens,
        )
        texts.extend(embedding_text(heading_path=c.heading_path, text=c.text) for c in chunks)
    return texts


def bare_rate(texts: list[str]) -> float:
    """Seconds for the bare model to embed ``texts`` in this process with one thread (load excluded)."""
    from common.config import Settings
    from common.knowledge.embeddings import SentenceTransformerEmbedder

    settings = Settings()
    embedder = SentenceTransformerEmbedder(settings.embeddings.model_copy(update={"num_threads": 1}))
    started = time.perf_counter()
    embedder.embed(texts)
    return time.perf_counter() - started


def _ceiling_worker(texts: list[str], ready: Any, results: Any) -> None:
    from common.config import Settings
    from common.knowledge.embeddings import SentenceTransformerEmbedder

    settings = Settings()
    embedder = SentenceTransformerEmbedder(settings.embeddings.model_copy(update={"num_threads": 1}))
    ready.wait()  # both models loaded: start together
    started = time.time()
    embedder.embed(texts)
    results.put((started, time.time()))


def ceiling_rate(texts: list[str], *, processes: int = 2) -> float:
    """Seconds for ``processes`` bare one-thread processes, started together, to embed ``texts`` between
    them: what the machine's cores give right now, with no pipeline around the model."""
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Barrier(processes), ctx.Queue()
    share = math.ceil(len(texts) / processes)
    workers = [
        ctx.Process(target=_ceiling_worker, args=(texts[i * share : (i + 1) * share], ready, results))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    spans: list[tuple[float, float]] = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    return max(end for _, end in spans) - min(start for start, _ in spans)


def _load() -> str:
    """The 1/5/15-minute load averages: other work on a shared machine shows up here."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _report_ingestion(args: argparse.Namespace, run: PipelineRun, corpus: Path) -> None:
    out = sys.stdout
    out.write(f"load average after the pipeline: {_load()}\n")
    texts = corpus_texts(corpus)
    bare_cps = len(texts) / bare_rate(texts)
    end_cps, steady_cps = run.chunks / run.seconds, run.steady_chunks / run.steady_s
    out.write(f"corpus: {args.docs} documents, {run.chunks} chunks\n")
    out.write(f"ray.init: {run.init_s:.1f} s (not counted)\n")
    out.write(f"pipeline (Ray Data, {args.actors} embed actor(s), {args.cpus} CPUs):\n")
    out.write(f"  end to end: {run.chunks} chunks in {run.seconds:.1f} s = {end_cps:.1f} chunks/s\n")
    out.write(f"  steady state: {run.steady_chunks:.0f} chunks in {run.steady_s:.1f} s ")
    out.write(f"= {steady_cps:.1f} chunks/s\n")
    out.write(f"bare model (1 process, 1 thread): {len(texts)} chunks = {bare_cps:.1f} chunks/s\n")
    out.write(f"ratio pipeline/bare: end to end {end_cps / bare_cps:.2f}, ")
    out.write(f"steady state {steady_cps / bare_cps:.2f}\n")
    if not args.skip_ceiling:
        ceiling_cps = len(texts) / ceiling_rate(texts)
        out.write(f"bare model, 2 processes x 1 thread at once: {ceiling_cps:.1f} chunks/s ")
        out.write(f"= {ceiling_cps / bare_cps:.2f}x one process (what the 2 cores give right now)\n")
    out.write(f"load average after the bare runs: {_load()}\n")


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print one report."""
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=220)
    parser.add_argument("--sections", type=int, default=10)
    parser.add_argument("--actors", type=int, default=2, help="EmbedChunks actors (one per CPU)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs for the local Ray instance")
    parser.add_argument("--batch-docs", type=int, default=16)
    retrieval.add_arguments(parser)
    parser.add_argument("--pg-url", default="postgresql://root@127.0.0.1:5432/postgres")
    parser.add_argument("--skip-retrieval", action="store_true")
    parser.add_argument("--skip-ceiling", action="store_true", help="skip the two-process bare model run")
    args = parser.parse_args(argv)

    name, database_url = _database(args.pg_url)
    out = sys.stdout
    out.write(f"load average (1/5/15 min) at start: {_load()}\n")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
            work = Path(tmp)
            _report_ingestion(args, pipeline_rate(args, database_url, work), work / "corpus")
            if not args.skip_retrieval:
                for line in retrieval.run_from_args(args, work):
                    out.write(line + "\n")
    finally:
        _drop(args.pg_url, name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
