"""Parsed document → chunk records with deterministic ids: the one step ingestion's idempotency rests on.

Both writers use it, the knowledge service (:func:`common.knowledge.sync.refresh_document`, for API
uploads) and the Ray Data pipeline (:class:`pipelines.stages.ChunkStage`), so the same text of the same
source of the same brand always gets the same id, and re-ingesting unchanged text writes nothing.
Pure (no vector store, no I/O), so a Ray Data stage can import it without loading a Qdrant client.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable

from common.config import RetrievalSettings
from common.knowledge.chunking import chunk_parsed
from common.knowledge.parsing import ParsedDocument
from common.schemas import ChunkRecord

#: Namespace of the uuid5 chunk ids (changing it would re-embed every stored chunk).
_CHUNK_NAMESPACE = uuid.UUID("0b6e8a52-5c3e-4d4e-9f0a-6f1c2a4e7d10")


def chunk_id(*, tenant_id: uuid.UUID, brand_id: uuid.UUID, source: str, heading_path: str, text: str) -> str:
    """Deterministic point id: the same content of the same source for the same brand → the same id."""
    name = "\x1f".join((str(tenant_id), str(brand_id), source, heading_path, text))
    return str(uuid.uuid5(_CHUNK_NAMESPACE, name))


def build_records(
    *,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    document: ParsedDocument,
    count_tokens: Callable[[str], int],
    retrieval: RetrievalSettings,
) -> list[ChunkRecord]:
    """Chunk a parsed document (text, table rows, FAQ entries) into records; identical chunks kept once."""
    chunks = chunk_parsed(
        document,
        count_tokens=count_tokens,
        chunk_tokens=retrieval.chunk_tokens,
        overlap_tokens=retrieval.chunk_overlap_tokens,
    )
    records: dict[str, ChunkRecord] = {}
    for chunk in chunks:
        cid = chunk_id(
            tenant_id=tenant_id,
            brand_id=brand_id,
            source=document.uri,
            heading_path=chunk.heading_path,
            text=chunk.text,
        )
        records.setdefault(
            cid,
            ChunkRecord(
                chunk_id=cid,
                tenant_id=tenant_id,
                brand_id=brand_id,
                source=document.uri,
                heading_path=chunk.heading_path,
                ordinal=chunk.ordinal,
                text=chunk.text,
                content_hash=hashlib.sha256(chunk.text.encode()).hexdigest(),
            ),
        )
    return list(records.values())
