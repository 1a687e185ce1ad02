"""Markdown-aware chunking: sections, heading paths, budgets, overlap, fallbacks, non-Latin text."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import pytest

from common.knowledge.chunking import (
    Chunk,
    chunk_document,
    chunk_faq,
    chunk_markdown,
    chunk_parsed,
    chunk_table_rows,
    embedding_text,
    table_row_text,
)
from common.knowledge.parsing import parse_document


def words(text: str) -> int:
    """A simple additive counter: whitespace-separated words."""
    return len(text.split())


def chars(text: str) -> int:
    """A non-word counter: every character (spaces and newlines included)."""
    return len(text)


def chunk(
    text: str, *, tokens: int = 50, overlap: int = 0, counter: Callable[[str], int] = words
) -> list[Chunk]:
    return chunk_markdown(text, count_tokens=counter, chunk_tokens=tokens, overlap_tokens=overlap)


def sentences(n: int, length: int = 6) -> str:
    return " ".join(f"S{i} " + " ".join(f"w{i}_{j}" for j in range(length - 2)) + " end." for i in range(n))


@pytest.mark.parametrize("text", ["", "   \n\n\t  \n", "# Only a heading\n\n## And another\n"])
def test_empty_documents_have_no_chunks(text: str) -> None:
    assert chunk(text) == []


def test_heading_paths_follow_the_heading_levels() -> None:
    doc = (
        "Intro before any heading.\n"
        "# Shipping\nWe ship fast.\n"
        "## International\nAbroad takes longer.\n"
        "### Canada\nFlat $15.\n"
        "## Domestic\nThree days.\n"
        "# Returns ##\n30 days.\n"
    )
    got = [(c.heading_path, c.text) for c in chunk(doc)]
    assert got == [
        ("", "Intro before any heading."),
        ("Shipping", "We ship fast."),
        ("Shipping > International", "Abroad takes longer."),
        ("Shipping > International > Canada", "Flat $15."),
        ("Shipping > Domestic", "Three days."),
        ("Returns", "30 days."),
    ]
    assert [c.ordinal for c in chunk(doc)] == list(range(6))


def test_hash_lines_inside_code_fences_are_not_headings() -> None:
    doc = (
        "# Setup\nRun this:\n\n```bash\n# install the tool\npip install acme\n## not a heading either\n```\n"
        "~~~\n# still code\n~~~\nAfter the code.\n# Next\nDone.\n"
    )
    chunks = chunk(doc, tokens=200)
    assert [c.heading_path for c in chunks] == ["Setup", "Next"]
    assert "# install the tool\npip install acme\n## not a heading either\n```" in chunks[0].text
    assert "~~~\n# still code\n~~~\nAfter the code." in chunks[0].text


def test_long_code_block_splits_on_lines_and_keeps_them_whole() -> None:
    code = "\n".join(f"# step {i}: do thing number {i}" for i in range(40))
    doc = f"# Script\n```\n{code}\n```\n"
    chunks = chunk(doc, tokens=30)
    assert len(chunks) > 1
    assert all(c.heading_path == "Script" for c in chunks)
    lines = {line for c in chunks for line in c.text.splitlines()}
    assert {f"# step {i}: do thing number {i}" for i in range(40)} <= lines


def test_plain_text_is_one_untitled_section() -> None:
    chunks = chunk_document(
        "# not a heading in plain text\nsecond line",
        content_type="text/plain",
        count_tokens=words,
        chunk_tokens=50,
        overlap_tokens=0,
    )
    assert [(c.heading_path, c.text) for c in chunks] == [("", "# not a heading in plain text\nsecond line")]


def test_unknown_content_type_is_refused() -> None:
    with pytest.raises(ValueError, match="application/pdf"):
        chunk_document(
            "x", content_type="application/pdf", count_tokens=words, chunk_tokens=50, overlap_tokens=0
        )


@pytest.mark.parametrize("counter", [words, chars])
def test_huge_paragraph_without_sentence_ends_falls_back_to_word_windows(
    counter: Callable[[str], int],
) -> None:
    text = " ".join(f"w{i}" for i in range(1500))
    chunks = chunk(text, tokens=40, overlap=0, counter=counter)
    assert len(chunks) > 10
    assert all(counter(c.text) <= 40 for c in chunks)
    # nothing lost, nothing reordered, nothing duplicated without overlap
    assert " ".join(c.text for c in chunks).split() == text.split()


def test_a_single_word_longer_than_the_budget_is_cut_into_character_windows() -> None:
    url = "https://example.com/" + "a" * 300
    chunks = chunk(f"# Link\n{url}", tokens=50, counter=chars)
    assert len(chunks) > 1
    assert all(chars(c.text) <= 50 for c in chunks)
    assert "".join(c.text for c in chunks) == url


@pytest.mark.parametrize("counter", [words, chars])
@pytest.mark.parametrize(("tokens", "overlap"), [(20, 0), (30, 8), (64, 16), (100, 30)])
def test_every_chunk_fits_the_budget(counter: Callable[[str], int], tokens: int, overlap: int) -> None:
    doc = "# Policy\n## Details\n" + sentences(60) + "\n\n" + sentences(10, length=15)
    chunks = chunk(doc, tokens=tokens, overlap=overlap, counter=counter)
    assert len(chunks) > 1
    assert all(counter(c.text) <= tokens for c in chunks)
    # the heading path is embedded with the text, so it spends budget too (never more than half)
    assert all(counter(c.text) <= max(tokens - counter("Policy > Details\n"), tokens // 2) for c in chunks)


def test_sections_are_split_on_sentence_boundaries_with_overlap() -> None:
    doc = "# FAQ\n" + sentences(30)  # 6 words per sentence
    chunks = chunk(doc, tokens=40, overlap=12)
    assert len(chunks) > 3
    ids = [[int(w[1:]) for w in c.text.split() if w.startswith("S")] for c in chunks]
    for c, sentence_ids in zip(chunks, ids):
        assert c.text.startswith("S") and c.text.endswith("end.")  # whole sentences only
        assert sentence_ids == list(range(sentence_ids[0], sentence_ids[-1] + 1))
    for previous, current in pairwise(ids):
        shared = [i for i in current if i in previous]
        # the overlap is the previous chunk's tail, at most 12 tokens (two 6-word sentences) ...
        assert shared == previous[-len(shared) :] == current[: len(shared)]
        assert 1 <= len(shared) <= 2
        # ... and the next chunk continues right after the previous one
        assert current[len(shared)] == previous[-1] + 1
    assert ids[0][0] == 0 and ids[-1][-1] == 29


def test_without_overlap_chunks_partition_the_section() -> None:
    body = sentences(30)
    chunks = chunk("# FAQ\n" + body, tokens=40, overlap=0)
    assert " ".join(c.text for c in chunks) == body


def test_paragraph_and_line_breaks_survive_splitting() -> None:
    doc = "# List\n" + "\n".join(f"- item {i} is here." for i in range(30)) + "\n\nClosing paragraph."
    chunks = chunk(doc, tokens=30)
    assert all("\n" in c.text for c in chunks[:-1])
    assert chunks[0].text.startswith("- item 0 is here.\n- item 1 is here.")
    assert chunks[-1].text.endswith("\n\nClosing paragraph.")


def test_non_latin_text_and_emoji_are_kept_intact() -> None:
    hebrew = "משלוח חינם בהזמנות מעל 75 דולר. ההחזרה תוך 30 יום."
    arabic = "الشحن مجاني للطلبات فوق 75 دولارًا؟ نعم، داخل الولايات المتحدة."
    emoji = "We love the outdoors 🏕️⛺🎒 and 👩🏽‍🚀 too!"
    cjk = "送料は75ドル以上で無料です。返品は30日以内です。保証は3年間です。"
    doc = f"# שאלות נפוצות\n{hebrew}\n\n## 🌍 International\n{arabic}\n{emoji}\n# 日本語\n{cjk}\n"
    chunks = chunk(doc, tokens=200)
    assert [c.heading_path for c in chunks] == ["שאלות נפוצות", "שאלות נפוצות > 🌍 International", "日本語"]
    assert chunks[0].text == hebrew
    assert chunks[1].text == f"{arabic}\n{emoji}"
    assert chunks[2].text == cjk
    # When split, CJK text is cut at its own full stops, and every character survives.
    small = chunk(f"# 日本語\n{cjk}", tokens=20, counter=chars)
    assert [c.text for c in small] == [
        "送料は75ドル以上で無料です。",
        "返品は30日以内です。",
        "保証は3年間です。",
    ]
    split_emoji = chunk(emoji * 20, tokens=15, counter=words)
    assert "".join(c.text for c in split_emoji).count("👩🏽‍🚀") == 20


def test_embedding_text_prefixes_the_heading_path() -> None:
    assert embedding_text(heading_path="Returns > Window", text="30 days.") == "Returns > Window\n30 days."
    assert embedding_text(heading_path="", text="30 days.") == "30 days."


# --- FAQ entries and parsed documents -------------------------------------------------------------


def test_faq_entries_are_one_chunk_each_under_faq_heading_paths() -> None:
    entries = [("Do you ship  to Canada?", "Yes, in 5-8 days."), ("Restocking fee?", "15% on electronics.")]
    chunks = chunk_faq(entries, count_tokens=words, chunk_tokens=50, overlap_tokens=0, first_ordinal=3)
    assert chunks == [
        Chunk("FAQ > Do you ship to Canada?", "Q: Do you ship to Canada?\nA: Yes, in 5-8 days.", 3),
        Chunk("FAQ > Restocking fee?", "Q: Restocking fee?\nA: 15% on electronics.", 4),
    ]


def test_a_long_faq_answer_is_split_under_its_question() -> None:
    chunks = chunk_faq([("Why?", sentences(40))], count_tokens=words, chunk_tokens=40, overlap_tokens=0)
    assert len(chunks) > 3
    assert {c.heading_path for c in chunks} == {"FAQ > Why?"}
    assert chunks[0].text.startswith("Q: Why?\nA: S0 ")
    assert all(words(c.text) <= 40 for c in chunks)


def test_faq_with_rtl_text_and_emoji_keeps_them_intact() -> None:
    question, answer = "هل الشحن مجاني؟", "نعم 🚚 للطلبات فوق 75 دولارًا."
    (only,) = chunk_faq([(question, answer)], count_tokens=chars, chunk_tokens=200, overlap_tokens=0)
    assert only.heading_path == f"FAQ > {question}" and only.text == f"Q: {question}\nA: {answer}"


def test_chunk_parsed_chunks_text_then_faq_with_continuous_ordinals() -> None:
    doc = parse_document(
        b"# Help\nIntro.\n\n| Question | Answer |\n|---|---|\n| Ship? | Yes. |\n|  | Also |\n| Wait? |  |\n",
        uri="help.md",
    )
    chunks = chunk_parsed(doc, count_tokens=words, chunk_tokens=50, overlap_tokens=0)
    assert [(c.heading_path, c.text, c.ordinal) for c in chunks] == [
        ("Help", "Intro.", 0),
        ("FAQ > Ship?", "Q: Ship?\nA: Yes.\nAlso", 1),  # the empty-question row continues the answer
    ]


def test_chunk_parsed_of_an_empty_or_faq_only_document() -> None:
    empty = parse_document(b"", uri="e.md", allow_empty=True)
    assert chunk_parsed(empty, count_tokens=words, chunk_tokens=50, overlap_tokens=0) == []
    csv_doc = parse_document(b"question,answer\nQ1,A1\n", uri="f.csv")
    chunks = chunk_parsed(csv_doc, count_tokens=words, chunk_tokens=50, overlap_tokens=0)
    assert [(c.heading_path, c.ordinal) for c in chunks] == [("FAQ > Q1", 0)]


def test_table_rows_are_one_chunk_each_naming_every_column() -> None:
    rows = [
        (
            "Plans",
            (("Plan", "Flex"), ("Monthly price", "€39"), ("Joining fee", "€0"), ("Club access", "one club")),
        ),
        ("Plans", (("Plan", "Premium"), ("Monthly price", "€59"))),
    ]
    chunks = chunk_table_rows(rows, count_tokens=words, chunk_tokens=50, overlap_tokens=0, first_ordinal=2)
    assert chunks == [
        Chunk("Plans", "Plan: Flex | Monthly price: €39 | Joining fee: €0 | Club access: one club", 2),
        Chunk("Plans", "Plan: Premium | Monthly price: €59", 3),
    ]
    assert table_row_text([]) == ""
    assert chunk_table_rows([("Plans", ())], count_tokens=words, chunk_tokens=50, overlap_tokens=0) == []


def test_a_row_above_the_budget_is_split_under_its_path_and_loses_nothing() -> None:
    cells = tuple((f"Col{i}", f"value {i} is long.") for i in range(12))
    row = ("Specs", cells)
    text = table_row_text(cells)
    # fits: one chunk, however many cells
    (whole,) = chunk_table_rows([row], count_tokens=words, chunk_tokens=words(text) + 5, overlap_tokens=0)
    assert whole.text == text
    # does not fit: the section fallback (sentences, then words), every piece under the table's path
    pieces = chunk_table_rows([row], count_tokens=words, chunk_tokens=20, overlap_tokens=0)
    assert len(pieces) > 1 and {c.heading_path for c in pieces} == {"Specs"}
    assert all(words(c.text) <= 20 for c in pieces)
    assert " ".join(c.text for c in pieces).split() == text.split()


def test_chunk_parsed_chunks_text_then_table_rows_then_faq() -> None:
    doc = parse_document(
        (
            "# Plans\nPrices include VAT.\n\n| Plan | Price |\n|---|:-:|\n| Flex | €39 |\n| Max | €79 |\n\n"
            "Cancel any time.\n\n## FAQ\n| Question | Answer |\n|---|---|\n| Refunds? | Within 14 days. |\n"
        ).encode(),
        uri="plans.md",
    )
    chunks = chunk_parsed(doc, count_tokens=words, chunk_tokens=50, overlap_tokens=0)
    assert [(c.heading_path, c.text, c.ordinal) for c in chunks] == [
        ("Plans", "Prices include VAT.\n\nCancel any time.", 0),  # the prose around the table, once
        ("Plans", "Plan: Flex | Price: €39", 1),
        ("Plans", "Plan: Max | Price: €79", 2),
        ("FAQ > Refunds?", "Q: Refunds?\nA: Within 14 days.", 3),
    ]


def test_chunk_parsed_of_a_data_csv() -> None:
    csv_doc = parse_document(
        b"Store,City,Phone\nNorth,Oslo,\nSouth,Bergen,555-0100\n", uri="s3://kb/stores.csv"
    )
    chunks = chunk_parsed(csv_doc, count_tokens=words, chunk_tokens=50, overlap_tokens=0)
    assert [(c.heading_path, c.text) for c in chunks] == [
        ("stores", "Store: North | City: Oslo"),
        ("stores", "Store: South | City: Bergen | Phone: 555-0100"),
    ]


def test_a_markdown_table_with_empty_cells_that_is_not_faq_stays_prose() -> None:
    table = "| Store | Phone | Hours |\n|---|---|---|\n| Portland |  | 9-21 |\n|  | 555-0100 |  |"
    chunks = chunk(f"# Stores\n{table}", tokens=200)
    assert [c.text for c in chunks] == [table]


def test_code_block_lines_with_hashes_and_pipes_stay_in_their_section() -> None:
    doc = "# Setup\n```bash\n# install\npip install acme | tee log\n```\nDone."
    (only,) = chunk(doc, tokens=200)
    assert only.heading_path == "Setup" and only.text.startswith("```bash\n# install\n")


def test_single_huge_paragraph_in_real_embedding_tokens() -> None:
    from common.config import EmbeddingSettings
    from common.knowledge.embeddings import token_counter

    count = token_counter(EmbeddingSettings())
    paragraph = "The TrailBlazer 2 tent is warranted for three years " * 200  # one line, no sentence end
    chunks = chunk_document(
        paragraph, content_type="text/plain", count_tokens=count, chunk_tokens=64, overlap_tokens=0
    )
    assert len(chunks) > 10
    assert all(count(c.text) <= 64 for c in chunks)
    assert " ".join(c.text for c in chunks).split() == paragraph.split()
