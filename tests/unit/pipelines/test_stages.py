"""ParseDocuments → ChunkDocuments: a document's table rows and FAQ entries survive the JSON row columns."""

from __future__ import annotations

import json
import uuid
from typing import Any

from common.config import RetrievalSettings
from common.knowledge.embeddings import approx_token_count
from common.knowledge.parsing import ParsedDocument, TableRow, parse_document
from common.knowledge.records import build_records
from common.schemas import ChunkRecord
from pipelines.sources import SourceItem
from pipelines.stages import PARSE_COLUMNS, ParseDocuments, input_batch, parsed_document, rows

MIXED_MD = (
    "# Plans\nPrices include VAT.\n\n| Plan | Price |\n|---|---|\n| Flex | €39 |\n\n"
    "## FAQ\n| Question | Answer |\n|---|---|\n| Refunds? | Within 14 days. |\n"
)


def parsed_row(data: bytes, uri: str) -> dict[str, Any]:
    """One document through the parse stage, as the chunk stage receives it."""
    batch = input_batch([SourceItem(uri=uri, location=uri)])
    (row,) = rows(ParseDocuments()({**batch, "data": [data]}))
    return row


def records(document: ParsedDocument) -> list[ChunkRecord]:
    return build_records(
        tenant_id=uuid.UUID(int=1),
        brand_id=uuid.UUID(int=2),
        document=document,
        count_tokens=approx_token_count,
        retrieval=RetrievalSettings(),
    )


def test_the_parse_row_rebuilds_the_records_of_the_api_path() -> None:
    row = parsed_row(MIXED_MD.encode(), "plans.md")
    assert set(row) == set(PARSE_COLUMNS) and not row["error"]
    assert json.loads(row["tables"]) == [["Plans", [["Plan", "Flex"], ["Price", "€39"]]]]
    via_row = records(parsed_document(row))
    assert via_row == records(parse_document(MIXED_MD.encode(), uri="plans.md"))
    assert [(r.heading_path, r.text) for r in via_row] == [
        ("Plans", "Prices include VAT."),
        ("Plans", "Plan: Flex | Price: €39"),
        ("FAQ > Refunds?", "Q: Refunds?\nA: Within 14 days."),
    ]


def test_a_data_csv_travels_as_table_rows() -> None:
    document = parsed_document(parsed_row(b"Store,City\nNorth,Oslo\n", "stores.csv"))
    assert document.table_rows == (TableRow("stores", (("Store", "North"), ("City", "Oslo"))),)
    assert (document.sections, document.text) == ((), "")
