"""Turning uploaded bytes (Markdown, text, HTML, PDF, FAQ CSV, DOCX) into text the chunker understands.

:func:`parse_document` is the single entry point. The media type comes from the ``content_type``
argument, else from the URI's file extension, else it is sniffed from the bytes. Every format ends up as

* ``text`` in Markdown (headings as ``#`` lines, so the chunker keeps heading paths) or plain text, and
* ``sections``: FAQ entries ``(question, answer)`` found in a FAQ CSV or in a Markdown table (also an
  HTML or DOCX table, which are rendered as Markdown tables first) whose header names a question and an
  answer column. The table is removed from ``text``; each entry becomes one chunk.
* ``table_rows``: the rows of every other table (and of a CSV that is not a FAQ), each as its
  ``(column name, value)`` cells under the heading path of the section that held the table (a CSV's:
  its file name). The table is removed from ``text``; each row becomes one chunk, so a question about
  one product finds that product's row instead of the whole table.

A document that cannot be parsed raises :class:`~common.errors.ParseError` with a machine-readable
``details["reason"]`` (:class:`ParseReason`); an unknown type raises
:class:`~common.errors.UnsupportedMediaType`; bytes above ``max_bytes`` raise
:class:`~common.errors.PayloadTooLarge`. Nothing is skipped silently: what was tolerated (a latin-1
fallback, FAQ rows without an answer, cells beyond a table's header) is listed in
:attr:`ParsedDocument.notes`.

Out of scope: OCR (an image-only PDF is a ``no_text`` error), legacy ``.doc``, spreadsheets other than CSV.
"""

from __future__ import annotations

import csv
import io
import posixpath
import re
import zipfile
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from common.errors import ParseError, PayloadTooLarge, UnsupportedMediaType
from common.knowledge.markdown import CodeFences, HeadingTrail, match_heading

MARKDOWN = "text/markdown"
PLAIN_TEXT = "text/plain"
HTML = "text/html"
PDF = "application/pdf"
CSV = "text/csv"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

#: Media types :func:`parse_document` accepts.
SUPPORTED_CONTENT_TYPES: frozenset[str] = frozenset({MARKDOWN, PLAIN_TEXT, HTML, PDF, CSV, DOCX})
#: Largest document accepted by default (bytes).
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024

_EXTENSIONS = {
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".txt": PLAIN_TEXT,
    ".text": PLAIN_TEXT,
    ".html": HTML,
    ".htm": HTML,
    ".pdf": PDF,
    ".csv": CSV,
    ".docx": DOCX,
}
_ALIASES = {
    "text/x-markdown": MARKDOWN,
    "application/xhtml+xml": HTML,
    "application/csv": CSV,
    "text/x-csv": CSV,
}
_UNSPECIFIC = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_QUESTION_HEADERS = frozenset(
    {"question", "questions", "q", "faq", "frage", "pregunta", "pergunta", "domanda", "vraag"}
)
_ANSWER_HEADERS = frozenset(
    {"answer", "answers", "a", "antwort", "respuesta", "réponse", "reponse", "resposta", "risposta"}
)


class ParseReason(StrEnum):
    """Why a document could not be parsed (``ParseError.details["reason"]``)."""

    EMPTY = "empty"
    NO_TEXT = "no_text"
    ENCRYPTED = "encrypted"
    CORRUPT = "corrupt"
    NO_FAQ_ENTRIES = "no_faq_entries"


class FaqEntry(NamedTuple):
    """One question and its answer."""

    question: str
    answer: str


class TableRow(NamedTuple):
    """One row of a data table: the heading path of the section that held the table, and the row's
    non-empty cells as ``(column name, value)`` in column order."""

    heading_path: str
    cells: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A parsed document: Markdown or plain ``text`` plus FAQ ``sections`` and ``table_rows``, ready for
    chunking.

    ``content_type`` is the source's media type; ``text_type`` says how ``text`` is structured
    (:data:`MARKDOWN` or :data:`PLAIN_TEXT`) and is what the chunker receives.
    """

    uri: str
    content_type: str
    title: str
    text: str
    text_type: str = MARKDOWN
    sections: tuple[FaqEntry, ...] = ()
    notes: tuple[str, ...] = field(default=())
    table_rows: tuple[TableRow, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True when there is neither text nor a FAQ entry nor a table row."""
        return not self.text.strip() and not self.sections and not self.table_rows


def parse_document(
    data: bytes,
    *,
    uri: str,
    content_type: str | None = None,
    max_bytes: int = MAX_DOCUMENT_BYTES,
    allow_empty: bool = False,
) -> ParsedDocument:
    """Parse ``data`` into a :class:`ParsedDocument`; see the module docstring for the rules.

    ``allow_empty`` turns the ``empty`` error into an empty document (used when a caller replaces a
    source's text with nothing, which deletes its chunks).
    """
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"{uri}: {len(data)} bytes is above the {max_bytes}-byte limit",
            details={"uri": uri, "bytes": len(data), "limit": max_bytes},
        )
    media_type, charset = _media_type(content_type)
    media_type = media_type or _from_extension(uri) or _sniff(data)
    parser = _PARSERS.get(media_type)
    if parser is None:
        raise UnsupportedMediaType(
            f"{uri}: cannot parse {media_type!r}",
            details={"uri": uri, "content_type": media_type, "supported": sorted(SUPPORTED_CONTENT_TYPES)},
        )
    document = parser(data, uri, charset)
    if document.is_empty and not allow_empty:
        raise _error(uri, media_type, ParseReason.EMPTY, "document has no text")
    return document


def detect_content_type(data: bytes, *, uri: str, content_type: str | None = None) -> str:
    """The media type :func:`parse_document` would use (argument, else extension, else sniffed)."""
    media_type, _ = _media_type(content_type)
    return media_type or _from_extension(uri) or _sniff(data)


def decode_text(data: bytes, *, charset: str | None = None) -> tuple[str, tuple[str, ...]]:
    """Decode text: a BOM wins, then ``charset``, then UTF-8; else latin-1 (never fails) with a note."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data.decode("utf-8-sig", errors="replace"), ()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace"), ()
    for encoding in (charset, "utf-8"):
        if encoding:
            try:
                return data.decode(encoding), ()
            except (UnicodeDecodeError, LookupError):
                continue
    return data.decode("latin-1"), ("not valid UTF-8: decoded as latin-1",)


def _error(uri: str, media_type: str, reason: ParseReason, message: str) -> ParseError:
    return ParseError(
        f"{uri}: {message}", details={"uri": uri, "content_type": media_type, "reason": reason.value}
    )


def _media_type(content_type: str | None) -> tuple[str | None, str | None]:
    if content_type is None:
        return None, None
    main, _, params = content_type.partition(";")
    media_type = main.strip().lower()
    charset = None
    match = re.search(r"charset\s*=\s*\"?([\w.:-]+)", params, re.IGNORECASE)
    if match:
        charset = match.group(1)
    if media_type in _UNSPECIFIC:
        return None, charset
    return _ALIASES.get(media_type, media_type), charset


def _from_extension(uri: str) -> str | None:
    path = urlsplit(uri).path if "://" in uri else uri
    return _EXTENSIONS.get(posixpath.splitext(path.lower())[1])


def _sniff(data: bytes) -> str:
    head = data[:2048]
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                if "word/document.xml" in archive.namelist():
                    return DOCX
        except zipfile.BadZipFile:
            pass
        return "application/zip"
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "application/octet-stream"
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<body" in lowered:
        return HTML
    text, _ = decode_text(head)
    if re.search(r"(?m)^ {0,3}#{1,6} \S|^\s*\|.*\|\s*$", text):
        return MARKDOWN
    return PLAIN_TEXT


# --- text formats ---------------------------------------------------------------------------------


def _parse_plain(data: bytes, uri: str, charset: str | None) -> ParsedDocument:
    text, notes = decode_text(data, charset=charset)
    return ParsedDocument(
        uri=uri,
        content_type=PLAIN_TEXT,
        title=_first_line(text),
        text=text.strip(),
        text_type=PLAIN_TEXT,
        notes=notes,
    )


def _parse_markdown(data: bytes, uri: str, charset: str | None) -> ParsedDocument:
    text, notes = decode_text(data, charset=charset)
    return _markdown_document(text, uri=uri, content_type=MARKDOWN, notes=notes)


def _markdown_document(
    text: str, *, uri: str, content_type: str, notes: tuple[str, ...], title: str = ""
) -> ParsedDocument:
    tables = extract_tables(text)
    body = tables.text
    heading = re.search(r"(?m)^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", body)
    return ParsedDocument(
        uri=uri,
        content_type=content_type,
        title=title or (heading.group(1).strip() if heading else _first_line(body)),
        text=body.strip(),
        text_type=MARKDOWN,
        sections=tables.entries,
        table_rows=tables.rows,
        notes=notes + tables.notes,
    )


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip().lstrip("#").strip()[:200]
    return ""


# --- tables: FAQ entries and data rows -----------------------------------------------------------

_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_QUESTION_MARKS = ("?", "\uff1f", "\u061f")  # ASCII, full-width (CJK), Arabic


class ExtractedTables(NamedTuple):
    """What :func:`extract_tables` found: the Markdown without its tables, and what they held."""

    text: str
    entries: tuple[FaqEntry, ...]
    rows: tuple[TableRow, ...]
    notes: tuple[str, ...]


def extract_tables(markdown: str) -> ExtractedTables:
    """Pull every Markdown table out of the text: FAQ tables (a header naming a question and an answer
    column) become entries, any other table one :class:`TableRow` per row under its section's heading
    path. Taking the table out keeps its rows from being chunked a second time as prose; anything inside
    code fences is left in the text."""
    lines = markdown.splitlines()
    kept: list[str] = []
    entries: list[FaqEntry] = []
    rows: list[TableRow] = []
    notes: list[str] = []
    fences = CodeFences()
    trail = HeadingTrail()
    i = 0
    while i < len(lines):
        line = lines[i]
        code = fences.is_code(line)
        heading = None if code else match_heading(line)
        header = None if code or heading is not None else _table_header(lines, i)
        if heading is not None:
            trail.enter(*heading)
        elif header is not None:
            end = i + 2
            while end < len(lines) and lines[end].strip() and "|" in lines[end]:
                end += 1
            body = [_table_cells(row) for row in lines[i + 2 : end] if not _is_rule(row)]
            where = f"table at line {i + 1}"
            columns = _faq_columns(header)
            if columns is not None:
                table_entries, table_notes = _faq_entries(body, columns, where=where)
                entries.extend(table_entries)
            else:
                table_rows, table_notes = _table_rows(header, body, heading_path=trail.path, where=where)
                rows.extend(table_rows)
                # Close the gap the table leaves, so the prose around it reads as one passage. (A FAQ
                # table keeps its old gap: closing it would change the ids of the prose around it.)
                if kept and not kept[-1].strip() and end < len(lines) and not lines[end].strip():
                    end += 1
            notes.extend(table_notes)
            i = end
            continue
        kept.append(line)
        i += 1
    return ExtractedTables("\n".join(kept), tuple(entries), tuple(rows), tuple(notes))


def _table_header(lines: list[str], i: int) -> list[str] | None:
    """The header cells when line ``i`` opens a table: a ``|`` line over an alignment row.

    A data table's alignment row must have one cell per header cell (as GFM requires), so a sentence
    with a pipe above a ``---`` break stays prose; a FAQ header is recognised as it always was.
    """
    if "|" not in lines[i] or i + 1 >= len(lines) or not _is_rule(lines[i + 1]):
        return None
    header = _table_cells(lines[i])
    if _faq_columns(header) is None and len(_table_cells(lines[i + 1])) != len(header):
        return None
    return header


def _is_rule(line: str) -> bool:
    # ``|:-:|`` needs its pipes; without any, only ``---`` counts, so a lone ``-`` list bullet is no rule.
    return bool(_TABLE_RULE.match(line)) and ("|" in line or "---" in line)


def _table_cells(line: str) -> list[str]:
    stripped = line.strip()
    if stripped.startswith("|"):
        stripped = stripped[1:]
    if stripped.endswith("|") and not stripped.endswith("\\|"):
        stripped = stripped[:-1]
    cells = re.split(r"(?<!\\)\|", stripped)
    return [cell.strip().replace("\\|", "|") for cell in cells]


def _faq_columns(header: list[str]) -> tuple[int, int] | None:
    names = [re.sub(r"[^\w]+", "", cell.lower()) for cell in header]
    question = next((i for i, n in enumerate(names) if n in _QUESTION_HEADERS), None)
    answer = next((i for i, n in enumerate(names) if n in _ANSWER_HEADERS), None)
    if question is None or answer is None or question == answer:
        return None
    return question, answer


def _faq_entries(
    rows: list[list[str]], columns: tuple[int, int], *, where: str
) -> tuple[list[FaqEntry], list[str]]:
    """Rows to entries. An answer-only row continues the previous answer (spreadsheet line wraps);
    a question without an answer is skipped with a note; a blank row is ignored."""
    q_col, a_col = columns
    entries: list[FaqEntry] = []
    notes: list[str] = []
    for number, row in enumerate(rows, start=1):
        question = row[q_col].strip() if q_col < len(row) else ""
        answer = row[a_col].strip() if a_col < len(row) else ""
        if question and answer:
            entries.append(FaqEntry(question, answer))
        elif answer and entries:
            previous = entries[-1]
            entries[-1] = FaqEntry(previous.question, f"{previous.answer}\n{answer}")
        elif question:
            notes.append(f"{where}, row {number}: question without an answer skipped: {question[:80]!r}")
        elif answer:
            notes.append(f"{where}, row {number}: answer without a question skipped")
    return entries, notes


def _table_rows(
    header: list[str], rows: list[list[str]], *, heading_path: str, where: str
) -> tuple[list[TableRow], list[str]]:
    """Rows to :class:`TableRow` cells named by the header. Empty cells are left out and all-empty rows
    ignored; a cell under an empty header cell, or beyond the header (with a note), is named
    ``Column N``, so a ragged row loses nothing."""
    names = [" ".join(name.split()) or f"Column {n}" for n, name in enumerate(header, start=1)]
    out: list[TableRow] = []
    notes: list[str] = []
    if not rows:
        notes.append(f"{where}: a header without rows, nothing to index")
    for number, row in enumerate(rows, start=1):
        if len(row) > len(names) and any(cell.strip() for cell in row[len(names) :]):
            notes.append(
                f"{where}, row {number}: {len(row)} cells under {len(names)} column names,"
                " the extra cells kept as 'Column N'"
            )
        cells = tuple(
            (names[k] if k < len(names) else f"Column {k + 1}", value)
            for k, cell in enumerate(row)
            if (value := " ".join(cell.split()))
        )
        if cells:
            out.append(TableRow(heading_path, cells))
    return out, notes


def _faq_names_only(header: list[str]) -> bool:
    """A header of nothing but question/answer names (``question`` alone) is a FAQ missing a column."""
    names = [re.sub(r"[^\w]+", "", cell.lower()) for cell in header if cell.strip()]
    return bool(names) and all(n in _QUESTION_HEADERS | _ANSWER_HEADERS for n in names)


def _parse_csv(data: bytes, uri: str, charset: str | None) -> ParsedDocument:
    text, notes = decode_text(data, charset=charset)
    if not text.strip():
        return ParsedDocument(uri=uri, content_type=CSV, title="", text="", notes=notes)
    try:
        dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = [row for row in csv.reader(io.StringIO(text), dialect) if any(c.strip() for c in row)]
    except csv.Error as exc:
        raise _error(uri, CSV, ParseReason.CORRUPT, f"malformed CSV: {exc}") from exc
    if not rows:
        return ParsedDocument(uri=uri, content_type=CSV, title="", text="", notes=notes)
    title = posixpath.splitext(posixpath.basename(urlsplit(uri).path or uri))[0]
    columns = _faq_columns(rows[0])
    if columns is not None:
        rows = rows[1:]
    elif _faq_names_only(rows[0]):
        raise _error(uri, CSV, ParseReason.NO_FAQ_ENTRIES, "a FAQ CSV needs a question and an answer column")
    elif max(len(r) for r in rows) >= 2 and rows[0][0].strip().endswith(_QUESTION_MARKS):
        # No header, and the first row asks a question: the first two columns are question and answer,
        # every row is data. (A header names columns; it does not ask.)
        columns = (0, 1)
        notes += ("no question/answer header: first column read as question, second as answer",)
    else:
        return _csv_table(rows, uri=uri, title=title, notes=notes)
    entries, row_notes = _faq_entries(rows, columns, where="CSV")
    if not entries:
        raise _error(uri, CSV, ParseReason.NO_FAQ_ENTRIES, "no row has both a question and an answer")
    return ParsedDocument(
        uri=uri,
        content_type=CSV,
        title=title,
        text="",
        sections=tuple(entries),
        notes=notes + tuple(row_notes),
    )


def _csv_table(rows: list[list[str]], *, uri: str, title: str, notes: tuple[str, ...]) -> ParsedDocument:
    """A CSV that is not a FAQ is a data table: first row the column names, one :class:`TableRow` per
    other row under the file's name (a CSV has no headings)."""
    table_rows, row_notes = _table_rows(rows[0], rows[1:], heading_path=title, where="CSV")
    return ParsedDocument(
        uri=uri,
        content_type=CSV,
        title=title,
        text="",
        table_rows=tuple(table_rows),
        notes=notes + tuple(row_notes),
    )


# --- HTML -----------------------------------------------------------------------------------------

_DROPPED = frozenset(
    {
        "script",
        "style",
        "noscript",
        "template",
        "nav",
        "header",
        "footer",
        "aside",
        "form",
        "iframe",
        "svg",
        "button",
        "select",
        "head",
    }
)
_DROPPED_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "search"})
_BLOCKS = frozenset(
    {
        "p",
        "div",
        "section",
        "article",
        "main",
        "ul",
        "ol",
        "li",
        "table",
        "thead",
        "tbody",
        "tfoot",
        "tr",
        "blockquote",
        "dl",
        "dt",
        "dd",
        "figure",
        "figcaption",
        "address",
        "details",
        "summary",
        "hr",
        "body",
        "caption",
    }
)
_HEADINGS = {f"h{n}": n for n in range(1, 7)}


def _parse_html(data: bytes, uri: str, charset: str | None) -> ParsedDocument:
    import lxml.etree
    import lxml.html

    text, notes = decode_text(data, charset=charset or _meta_charset(data))
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text)
    if not text.strip():
        return ParsedDocument(uri=uri, content_type=HTML, title="", text="", notes=notes)
    try:
        root = lxml.html.document_fromstring(text)
    except (lxml.etree.ParserError, ValueError) as exc:
        raise _error(uri, HTML, ParseReason.CORRUPT, f"unreadable HTML: {exc}") from exc
    title = " ".join((root.findtext(".//title") or "").split())
    blocks = _HtmlText()
    for container in _main_containers(root):
        blocks.walk(container)
    return _markdown_document(blocks.markdown(), uri=uri, content_type=HTML, notes=notes, title=title)


def _meta_charset(data: bytes) -> str | None:
    match = re.search(rb"<meta[^>]+charset\s*=\s*[\"']?([\w.:-]+)", data[:4096], re.IGNORECASE)
    return match.group(1).decode("ascii") if match else None


def _main_containers(root: Any) -> list[Any]:
    """``<main>`` (or role=main) if present, else the ``<article>`` elements, else ``<body>``."""
    for xpath in ("//main | //*[@role='main']", "//article"):
        candidates = list(root.xpath(xpath))
        found_set = set(candidates)
        # Nested matches are already inside an outer one.
        found = [el for el in candidates if not any(a in found_set for a in el.iterancestors())]
        if found:
            return found
    body = root.find("body")
    return [body if body is not None else root]


class _HtmlText:
    """Walks an element tree, emitting Markdown blocks (headings, paragraphs, list items, tables)."""

    def __init__(self) -> None:
        self._blocks: list[str] = []
        self._inline: list[str] = []
        self._table: list[list[str]] | None = None
        self._row: list[str] | None = None

    def markdown(self) -> str:
        self._flush()
        return "\n\n".join(self._blocks)

    def walk(self, el: Any) -> None:
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag and not self._dropped(el, tag):
            self._element(el, tag.lower())
        if el.tail:
            self._inline.append(el.tail)

    @staticmethod
    def _dropped(el: Any, tag: str) -> bool:
        role = (el.get("role") or "").lower()
        return tag.lower() in _DROPPED or role in _DROPPED_ROLES or el.get("hidden") is not None

    def _children(self, el: Any) -> None:
        if el.text:
            self._inline.append(el.text)
        for child in el:
            self.walk(child)

    def _element(self, el: Any, tag: str) -> None:
        if tag in _HEADINGS:
            self._flush()
            text = " ".join(el.text_content().split())
            if text:
                self._blocks.append(f"{'#' * _HEADINGS[tag]} {text}")
        elif tag == "pre":
            self._flush()
            self._blocks.append(f"```\n{el.text_content().strip(chr(10))}\n```")
        elif tag == "br":
            self._inline.append("\n")
        elif tag == "table":
            self._flush()
            self._table = []
            self._children(el)
            self._emit_table()
        elif tag in ("td", "th") and self._row is not None:
            self._row.append(" ".join(el.text_content().split()))
        elif tag == "tr" and self._table is not None:
            self._row = []
            for child in el:
                self.walk(child)
            self._table.append(self._row)
            self._row = None
            self._inline.clear()
        elif tag in _BLOCKS:
            self._flush()
            if tag == "li":
                self._inline.append("- ")
            self._children(el)
            self._flush()
        else:
            self._children(el)

    def _emit_table(self) -> None:
        rows = [r for r in (self._table or []) if any(r)]
        self._table = None
        self._inline.clear()
        if not rows:
            return
        width = max(len(r) for r in rows)
        lines = [
            "| " + " | ".join(c.replace("|", "\\|") for c in r + [""] * (width - len(r))) + " |" for r in rows
        ]
        lines.insert(1, "|" + " --- |" * width)
        self._blocks.append("\n".join(lines))

    def _flush(self) -> None:
        text = "".join(self._inline)
        self._inline.clear()
        lines = [" ".join(line.split()) for line in text.split("\n")]
        block = "\n".join(line for line in lines if line)
        if block and block != "-":
            self._blocks.append(block)


# --- PDF and DOCX ---------------------------------------------------------------------------------


def _parse_pdf(data: bytes, uri: str, charset: str | None) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise _error(uri, PDF, ParseReason.ENCRYPTED, "PDF is encrypted with a password")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        metadata = reader.metadata
        title = str(metadata.title or "").strip() if metadata is not None else ""
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise _error(uri, PDF, ParseReason.CORRUPT, f"unreadable PDF: {exc}") from exc
    text = "\n\n".join(page for page in pages if page)
    if not text.strip():
        raise _error(uri, PDF, ParseReason.NO_TEXT, "no extractable text (OCR is out of scope)")
    return ParsedDocument(
        uri=uri, content_type=PDF, title=title or _first_line(text), text=text, text_type=PLAIN_TEXT
    )


def _parse_docx(data: bytes, uri: str, charset: str | None) -> ParsedDocument:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
        blocks = list(_docx_blocks(document))
        title = (document.core_properties.title or "").strip()
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise _error(uri, DOCX, ParseReason.CORRUPT, f"unreadable DOCX: {exc}") from exc
    return _markdown_document("\n\n".join(blocks), uri=uri, content_type=DOCX, notes=(), title=title)


def _docx_blocks(document: Any) -> Any:
    """Paragraphs and tables in body order; ``Heading N`` styles become Markdown headings."""
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for child in document.element.body.iterchildren():
        local = child.tag.rsplit("}", 1)[-1]
        if local == "p":
            paragraph = Paragraph(child, document)
            text = paragraph.text.strip()
            style = (paragraph.style.name if paragraph.style is not None else "") or ""
            level = re.fullmatch(r"Heading (\d)", style)
            if not text:
                continue
            if level:
                yield f"{'#' * int(level.group(1))} {text}"
            elif style == "Title":
                yield f"# {text}"
            elif style.startswith("List"):
                yield f"- {text}"
            else:
                yield text
        elif local == "tbl":
            rows = [
                [" ".join(c.text.split()).replace("|", "\\|") for c in r.cells]
                for r in Table(child, document).rows
            ]
            if rows:
                width = max(len(r) for r in rows)
                lines = ["| " + " | ".join(r + [""] * (width - len(r))) + " |" for r in rows]
                lines.insert(1, "|" + " --- |" * width)
                yield "\n".join(lines)


_PARSERS = {
    MARKDOWN: _parse_markdown,
    PLAIN_TEXT: _parse_plain,
    HTML: _parse_html,
    PDF: _parse_pdf,
    CSV: _parse_csv,
    DOCX: _parse_docx,
}
