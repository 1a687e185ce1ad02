"""parse_document: every format, type detection, encodings, FAQ and data tables, errors with their reasons."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from common.errors import InvalidInput, ParseError, PayloadTooLarge, UnsupportedMediaType
from common.knowledge import parsing
from common.knowledge.parsing import (
    CSV,
    DOCX,
    HTML,
    MARKDOWN,
    PDF,
    PLAIN_TEXT,
    SUPPORTED_CONTENT_TYPES,
    FaqEntry,
    ParseReason,
    TableRow,
    detect_content_type,
    parse_document,
)

DOCS = Path(__file__).resolve().parents[2] / "fixtures" / "docs"


def text_pdf(*pages: str, title: str | None = None) -> bytes:
    """A real text PDF built with pypdf's writer: one Helvetica text line per page."""
    writer = PdfWriter()
    for text in pages:
        page = writer.add_blank_page(width=612, height=792)
        font = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})}
        )
        stream = DecodedStreamObject()
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream.set_data(f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
    if title:
        writer.add_metadata({"/Title": title})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def blank_pdf() -> bytes:
    """An image-only PDF looks like this to a text extractor: pages without text."""
    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes() -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = "Warranty Booklet"
    document.add_heading("Warranty", level=1)
    document.add_paragraph("Every tent has a 3-year warranty.")
    document.add_heading("Claims", level=2)
    document.add_paragraph("Send a photo of the damage.", style="List Bullet")
    table = document.add_table(rows=3, cols=2)
    for row, (q, a) in zip(table.rows, [("Question", "Answer"), ("Is wear covered?", "No."), ("", "")]):
        row.cells[0].text, row.cells[1].text = q, a
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def reason(error: pytest.ExceptionInfo[ParseError]) -> str:
    return str(error.value.details["reason"])


# --- type detection ------------------------------------------------------------------------------


def test_supported_types_are_the_six_formats() -> None:
    assert {MARKDOWN, PLAIN_TEXT, HTML, PDF, CSV, DOCX} == SUPPORTED_CONTENT_TYPES


@pytest.mark.parametrize(
    ("uri", "content_type", "data", "expected"),
    [
        ("any", "text/markdown; charset=utf-8", b"plain words", MARKDOWN),  # the argument wins
        ("any", "text/x-markdown", b"x", MARKDOWN),
        ("https://x.example/help/faq.CSV?v=2#top", None, b"q,a", CSV),  # then the extension
        ("docs/guide.htm", None, b"no tags", HTML),
        ("notes.txt", "application/octet-stream", b"# looks like markdown", PLAIN_TEXT),
        ("upload", None, b"%PDF-1.7\n...", PDF),  # then the bytes
        ("upload", None, b"  <!DOCTYPE html><html><body>x</body></html>", HTML),
        ("upload", None, b"## Heading\ntext", MARKDOWN),
        ("upload", None, b"just a sentence.", PLAIN_TEXT),
    ],
)
def test_content_type_comes_from_argument_then_extension_then_bytes(
    uri: str, content_type: str | None, data: bytes, expected: str
) -> None:
    assert detect_content_type(data, uri=uri, content_type=content_type) == expected


def test_docx_is_sniffed_from_its_zip_contents() -> None:
    assert detect_content_type(docx_bytes(), uri="upload") == DOCX


@pytest.mark.parametrize(
    ("uri", "content_type", "data"),
    [
        ("logo.png", "image/png", b"\x89PNG\r\n\x1a\n"),
        ("sheet.xlsx", None, b"PK\x03\x04not a docx"),
        ("blob", None, b"\x00\x01\x02binary"),
    ],
)
def test_unknown_types_are_refused_with_the_supported_list(
    uri: str, content_type: str | None, data: bytes
) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        parse_document(data, uri=uri, content_type=content_type)
    assert info.value.status_code == 415
    assert info.value.details["supported"] == sorted(SUPPORTED_CONTENT_TYPES)


def test_oversized_documents_are_refused_before_parsing() -> None:
    with pytest.raises(PayloadTooLarge) as info:
        parse_document(b"x" * 101, uri="big.txt", max_bytes=100)
    assert info.value.details == {"uri": "big.txt", "bytes": 101, "limit": 100}


# --- text, Markdown, encodings -------------------------------------------------------------------


def test_markdown_keeps_headings_and_takes_the_first_as_title() -> None:
    doc = parse_document(b"Intro line\n\n# Returns\n\n## Window\n30 days.\n", uri="returns.md")
    assert (doc.content_type, doc.text_type, doc.title) == (MARKDOWN, MARKDOWN, "Returns")
    assert "## Window\n30 days." in doc.text and doc.sections == ()


@pytest.mark.parametrize(
    ("data", "text", "notes"),
    [
        ("Envío gratis 🚚".encode(), "Envío gratis 🚚", ()),
        (b"\xef\xbb\xbfBOM first", "BOM first", ()),
        ("Mañana".encode("utf-16"), "Mañana", ()),
        ("Café crème".encode("latin-1"), "Café crème", ("not valid UTF-8: decoded as latin-1",)),
    ],
)
def test_text_encodings_are_detected(data: bytes, text: str, notes: tuple[str, ...]) -> None:
    doc = parse_document(data, uri="note.txt")
    assert (doc.text, doc.notes, doc.text_type) == (text, notes, PLAIN_TEXT)


def test_a_declared_charset_is_used() -> None:
    data = "Grüße".encode("cp1252")
    assert parse_document(data, uri="x", content_type="text/plain; charset=cp1252").text == "Grüße"


@pytest.mark.parametrize("data", [b"", b"   \n\t\n", b"\xef\xbb\xbf"])
def test_empty_documents_raise_empty_unless_allowed(data: bytes) -> None:
    with pytest.raises(ParseError) as info:
        parse_document(data, uri="empty.md")
    assert reason(info) == ParseReason.EMPTY and info.value.status_code == 422
    assert isinstance(info.value, InvalidInput)
    assert info.value.to_body()["error"]["code"] == "unparseable_document"
    assert parse_document(data, uri="empty.md", allow_empty=True).is_empty


# --- FAQ tables -----------------------------------------------------------------------------------


def test_faq_csv_with_empty_cells() -> None:
    doc = parse_document((DOCS / "faq.csv").read_bytes(), uri="s3://acme/help/faq.csv")
    assert (doc.content_type, doc.title, doc.text) == (CSV, "faq", "")
    assert doc.sections == (
        FaqEntry("Do you ship to Canada?", "Yes, standard shipping to Canada takes 5-8 business days."),
        # an answer-only row continues the previous answer
        FaqEntry(
            "What is the restocking fee?",
            "A 15% restocking fee applies to opened electronics.\nIt does not apply to defective items.",
        ),
        FaqEntry("Do you price-match, even after purchase?", "Yes, within 14 days of purchase."),
    )
    # a question without an answer is reported, never silently dropped
    assert doc.notes == ("CSV, row 4: question without an answer skipped: 'Can I pay with PayPal?'",)


def test_faq_csv_header_detection_delimiters_and_column_order() -> None:
    semicolon = "Antwort;Frage\nJa, in 5 Tagen.;Liefern Sie nach Österreich?\n".encode()
    doc = parse_document(semicolon, uri="faq-de.csv")
    assert doc.sections == (FaqEntry("Liefern Sie nach Österreich?", "Ja, in 5 Tagen."),)
    headerless = parse_document(b"Do you ship?,Yes.\nDo you repair?,No.\n", uri="faq.csv")
    assert [e.question for e in headerless.sections] == ["Do you ship?", "Do you repair?"]
    assert headerless.notes == ("no question/answer header: first column read as question, second as answer",)


@pytest.mark.parametrize(
    "data",
    [b"question\nonly one column\n", b"question,answer\nno answer here,\n,\n"],
)
def test_faq_csv_without_entries_is_an_error(data: bytes) -> None:
    with pytest.raises(ParseError) as info:
        parse_document(data, uri="faq.csv")
    assert reason(info) == ParseReason.NO_FAQ_ENTRIES


def test_markdown_faq_table_becomes_entries_and_another_table_rows() -> None:
    doc = parse_document((DOCS / "faq.md").read_bytes(), uri="faq.md")
    assert doc.sections == (
        FaqEntry(
            "How long is the return window?",
            "30 days from delivery; 60 days for Trail Club members.",
        ),
        FaqEntry(
            "Is there a fee for | pipes?",
            "No, pipes in cells are escaped.\nEmpty question rows continue the previous answer.",
        ),
    )
    assert "| Question |" not in doc.text and "How long is the return window" not in doc.text
    # the store table is a data table: its row leaves the text and carries its column names
    assert doc.table_rows == (TableRow("Help Center", (("Store", "Portland"), ("Hours", "9-21"))),)
    assert "Portland" not in doc.text and "## Contact" in doc.text
    assert len(doc.notes) == 1 and "Do you sell gift cards?" in doc.notes[0]


def test_tables_inside_code_fences_are_not_faq() -> None:
    text = "```\n| Question | Answer |\n|---|---|\n| a | b |\n```\n"
    doc = parse_document(text.encode(), uri="x.md")
    assert doc.sections == () and "| a | b |" in doc.text


# --- data tables --------------------------------------------------------------------------------

PLANS_MD = """# Memberships

Pick the plan that fits.

## Plans

Prices include VAT.

| Plan | Monthly price | Joining fee | Club access |
|------|--------------:|:-----------:|-------------|
| Flex | €39 | €0 | one club |
| Premium | €59 |  | all clubs |

Cancel any time with one month's notice.

## Contact

Call us.
"""


def test_markdown_data_table_rows_carry_column_names_and_section_path() -> None:
    doc = parse_document(PLANS_MD.encode(), uri="plans.md")
    assert doc.table_rows == (
        TableRow(
            "Memberships > Plans",
            (("Plan", "Flex"), ("Monthly price", "€39"), ("Joining fee", "€0"), ("Club access", "one club")),
        ),
        # the empty joining-fee cell is left out, not written as "Joining fee: "
        TableRow(
            "Memberships > Plans",
            (("Plan", "Premium"), ("Monthly price", "€59"), ("Club access", "all clubs")),
        ),
    )
    # the table leaves the text; the prose around it stays, as one passage
    assert doc.text == (
        "# Memberships\n\nPick the plan that fits.\n\n## Plans\n\nPrices include VAT.\n\n"
        "Cancel any time with one month's notice.\n\n## Contact\n\nCall us."
    )
    assert (doc.sections, doc.notes, doc.title) == ((), (), "Memberships")


def test_data_table_before_any_heading_has_the_empty_heading_path() -> None:
    doc = parse_document(b"| Size | Weight |\n|---|---|\n| S | 1 kg |\n", uri="sizes.md")
    assert doc.table_rows == (TableRow("", (("Size", "S"), ("Weight", "1 kg"))),)
    assert doc.text == "" and not doc.is_empty


@pytest.mark.parametrize(
    "table",
    [
        "| Plan | Price |\n|---|---|",  # header only
        "| Plan | Price |\n|---|---|\n|  |  |\n| | |",  # rows with every cell empty
    ],
)
def test_data_table_without_values_yields_no_rows(table: str) -> None:
    doc = parse_document(f"# Plans\nSee below.\n\n{table}\n".encode(), uri="p.md")
    assert doc.table_rows == () and doc.text == "# Plans\nSee below."
    with pytest.raises(ParseError) as info:  # a document of nothing but that table is empty
        parse_document(f"{table}\n".encode(), uri="p.md")
    assert reason(info) == ParseReason.EMPTY


def test_header_only_table_is_noted() -> None:
    doc = parse_document(b"Intro.\n\n| Plan | Price |\n|---|---|\n", uri="p.md")
    assert doc.notes == ("table at line 3: a header without rows, nothing to index",)


def test_ragged_rows_pair_what_exists_and_keep_extra_cells() -> None:
    text = "| Plan | Price | Term |\n|---|---|---|\n| Flex | €39 |\n| Max | €79 | 12 months | promo | |\n"
    doc = parse_document(text.encode(), uri="p.md")
    assert doc.table_rows == (
        TableRow("", (("Plan", "Flex"), ("Price", "€39"))),
        TableRow("", (("Plan", "Max"), ("Price", "€79"), ("Term", "12 months"), ("Column 4", "promo"))),
    )
    assert doc.notes == (
        "table at line 1, row 2: 5 cells under 3 column names, the extra cells kept as 'Column N'",
    )


def test_empty_header_cells_get_a_generic_name() -> None:
    doc = parse_document(b"| | Price |\n|---|---|\n| Flex | \xe2\x82\xac39 |\n", uri="p.md")
    assert doc.table_rows == (TableRow("", (("Column 1", "Flex"), ("Price", "€39"))),)


def test_escaped_pipes_survive_in_cells_and_alignment_rows_are_not_rows() -> None:
    text = "| Cable | Ports |\n|:--|:-:|\n| USB-C \\| Lightning | 2 |\n|---|---|\n| HDMI | 1 |\n"
    doc = parse_document(text.encode(), uri="c.md")
    assert doc.table_rows == (
        TableRow("", (("Cable", "USB-C | Lightning"), ("Ports", "2"))),
        TableRow("", (("Cable", "HDMI"), ("Ports", "1"))),
    )


def test_tables_inside_code_fences_are_not_data_tables() -> None:
    text = "# Usage\n~~~\n| Plan | Price |\n|---|---|\n| Flex | 39 |\n~~~\n"
    doc = parse_document(text.encode(), uri="x.md")
    assert doc.table_rows == () and "| Flex | 39 |" in doc.text


def test_a_pipe_in_prose_above_a_break_is_not_a_table() -> None:
    # GFM: an alignment row needs one cell per header cell; "---" under two cells is a thematic break
    text = "# Notes\nOpen Mon | Tue only.\n---\nMore text.\n"
    doc = parse_document(text.encode(), uri="n.md")
    assert doc.table_rows == () and "Open Mon | Tue only." in doc.text


def test_faq_table_next_to_a_data_table_stays_faq() -> None:
    text = "# Help\n| Q | A |\n|---|---|\n| Ship? | Yes. |\n\n| City | Hours |\n|---|---|\n| Oslo | 9-17 |\n"
    doc = parse_document(text.encode(), uri="h.md")
    assert doc.sections == (FaqEntry("Ship?", "Yes."),)
    assert doc.table_rows == (TableRow("Help", (("City", "Oslo"), ("Hours", "9-17"))),)


def test_non_faq_csv_rows_under_the_file_name() -> None:
    data = "Plan,Monthly price,Joining fee\nFlex,€39,€0\nPremium,€59,\n,,\n".encode()
    doc = parse_document(data, uri="s3://acme/pricing/plans.csv")
    assert (doc.content_type, doc.title, doc.text, doc.sections) == (CSV, "plans", "", ())
    assert doc.table_rows == (
        TableRow("plans", (("Plan", "Flex"), ("Monthly price", "€39"), ("Joining fee", "€0"))),
        TableRow("plans", (("Plan", "Premium"), ("Monthly price", "€59"))),
    )


def test_non_faq_csv_with_ragged_rows_and_one_column() -> None:
    ragged = parse_document(b"Store,City\nNorth,Oslo,open late\nSouth\n", uri="stores.csv")
    assert ragged.table_rows == (
        TableRow("stores", (("Store", "North"), ("City", "Oslo"), ("Column 3", "open late"))),
        TableRow("stores", (("Store", "South"),)),
    )
    assert ragged.notes == ("CSV, row 1: 3 cells under 2 column names, the extra cells kept as 'Column N'",)
    single = parse_document(b"Store\nNorth\n", uri="stores.csv")
    assert single.table_rows == (TableRow("stores", (("Store", "North"),)),)


def test_header_only_csv_is_empty() -> None:
    with pytest.raises(ParseError) as info:
        parse_document(b"Plan,Price\n", uri="plans.csv")
    assert reason(info) == ParseReason.EMPTY
    assert parse_document(b"Plan,Price\n", uri="plans.csv", allow_empty=True).is_empty


# --- HTML -----------------------------------------------------------------------------------------


def test_html_keeps_main_text_and_drops_navigation_chrome_and_scripts() -> None:
    doc = parse_document((DOCS / "page.html").read_bytes(), uri="https://acme.example/care")
    assert (doc.content_type, doc.text_type, doc.title) == (HTML, MARKDOWN, "Acme Outdoor | Care Guide")
    for chrome in ("NAV-MENU-TEXT", "HEADER-BANNER-TEXT", "FOOTER-LEGAL-TEXT", "SIDEBAR-PROMO-TEXT"):
        assert chrome not in doc.text
    assert "TRACKING-SCRIPT-TEXT" not in doc.text and "font-family" not in doc.text
    assert doc.text.startswith("# Tent Care Guide\n\nAlways dry your tent completely before storing it;")
    assert (
        "## Cleaning\n\nUse lukewarm water and a non-detergent soap.\nNever machine-wash a tent." in doc.text
    )
    assert "- Sponge the fly and body by hand.\n\n- Rinse the zippers with fresh water." in doc.text
    assert "```\nApply sealant to the inside seams.\nLet it cure for 12 hours.\n```" in doc.text
    assert doc.sections == (
        FaqEntry("Can I store my tent wet?", "No. Dry it within 24 hours to prevent mildew."),
        FaqEntry("Do you repair tents?", "Yes, our Portland store repairs poles and zippers."),
    )


def test_html_data_table_rows_under_their_heading() -> None:
    html = (
        "<html><body><main><h1>Gear</h1><h2>Tents</h2><p>Our range.</p>"
        "<table><thead><tr><th>Model</th><th>Weight</th><th>Price</th></tr></thead><tbody>"
        "<tr><td>TrailBlazer 2</td><td>1.9 kg</td><td>$249</td></tr>"
        "<tr><td>Summit | Dome 4</td><td></td><td>$429</td></tr>"
        "</tbody></table><p>Free shipping.</p></main></body></html>"
    )
    doc = parse_document(html.encode(), uri="https://acme.example/tents")
    assert doc.table_rows == (
        TableRow("Gear > Tents", (("Model", "TrailBlazer 2"), ("Weight", "1.9 kg"), ("Price", "$249"))),
        TableRow("Gear > Tents", (("Model", "Summit | Dome 4"), ("Price", "$429"))),
    )
    assert doc.text == "# Gear\n\n## Tents\n\nOur range.\n\nFree shipping."


def test_html_without_main_prefers_articles_then_body() -> None:
    article = (
        b"<html><body><nav>MENU</nav><article><h2>Post</h2><p>Body.</p></article><p>Stray</p></body></html>"
    )
    assert parse_document(article, uri="a.html").text == "## Post\n\nBody."
    body = b"<html><body><div role='navigation'>MENU</div><div>Plain <b>page</b> text.</div></body></html>"
    assert parse_document(body, uri="b.html").text == "Plain page text."


def test_html_charset_from_meta_and_hidden_elements() -> None:
    data = (
        '<html><head><meta charset="iso-8859-1"></head><body><p>Caf\xe9</p><p hidden>secret</p></body></html>'
    )
    doc = parse_document(data.encode("latin-1"), uri="c.html")
    assert doc.text == "Café"


def test_html_with_only_chrome_is_empty() -> None:
    with pytest.raises(ParseError) as info:
        parse_document(b"<html><body><nav>Only a menu</nav><footer>(c)</footer></body></html>", uri="x.html")
    assert reason(info) == ParseReason.EMPTY


# --- PDF ------------------------------------------------------------------------------------------


def test_text_pdf_pages_are_extracted() -> None:
    data = text_pdf("The TrailBlazer 2 has a 3-year warranty.", "Claims need a photo.", title="Warranty")
    doc = parse_document(data, uri="s3://acme/warranty.pdf")
    assert (doc.content_type, doc.text_type, doc.title) == (PDF, PLAIN_TEXT, "Warranty")
    assert doc.text == "The TrailBlazer 2 has a 3-year warranty.\n\nClaims need a photo."


def test_image_only_or_blank_pdf_is_a_parse_error_not_an_empty_document() -> None:
    with pytest.raises(ParseError, match="OCR is out of scope") as info:
        parse_document(blank_pdf(), uri="scan.pdf")
    assert reason(info) == ParseReason.NO_TEXT


def test_corrupt_pdf_is_a_parse_error() -> None:
    with pytest.raises(ParseError) as info:
        parse_document(b"%PDF-1.7\nthis is not a pdf body", uri="broken.pdf")
    assert reason(info) == ParseReason.CORRUPT


def test_encrypted_pdf_is_a_parse_error() -> None:
    writer = PdfWriter(clone_from=io.BytesIO(text_pdf("secret")))
    writer.encrypt(user_password="pw", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(ParseError) as info:
        parse_document(out.getvalue(), uri="locked.pdf")
    assert reason(info) == ParseReason.ENCRYPTED


# --- DOCX -----------------------------------------------------------------------------------------


def test_docx_headings_lists_and_faq_tables() -> None:
    doc = parse_document(docx_bytes(), uri="booklet.docx")
    assert (doc.content_type, doc.text_type, doc.title) == (DOCX, MARKDOWN, "Warranty Booklet")
    assert (
        doc.text
        == "# Warranty\n\nEvery tent has a 3-year warranty.\n\n## Claims\n\n- Send a photo of the damage."
    )
    assert doc.sections == (FaqEntry("Is wear covered?", "No."),)


def test_docx_data_table_rows_under_their_heading() -> None:
    import docx

    document = docx.Document()
    document.add_heading("Sizes", level=1)
    table = document.add_table(rows=3, cols=2)
    for row, cells in zip(table.rows, [("Size", "Chest"), ("M", "96 cm"), ("L", "104 cm")]):
        row.cells[0].text, row.cells[1].text = cells
    out = io.BytesIO()
    document.save(out)
    doc = parse_document(out.getvalue(), uri="sizes.docx")
    assert doc.table_rows == (
        TableRow("Sizes", (("Size", "M"), ("Chest", "96 cm"))),
        TableRow("Sizes", (("Size", "L"), ("Chest", "104 cm"))),
    )
    assert doc.text == "# Sizes"


def test_corrupt_docx_is_a_parse_error() -> None:
    with pytest.raises(ParseError) as info:
        parse_document(b"PK\x03\x04garbage", uri="broken.docx")
    assert reason(info) == ParseReason.CORRUPT


def test_parse_error_is_importable_from_parsing_too() -> None:
    # the pipeline imports everything it needs from common.knowledge.parsing
    assert parsing.ParseError is ParseError
