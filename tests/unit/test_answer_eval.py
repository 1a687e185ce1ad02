"""The answer-quality evaluation (bench/answers.py): its labelled sets agree with the documents, and
the judge scores what the labels say."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter

import pytest
import yaml

from bench import answers
from common.schemas import RetrievedChunk

KINDS = {"answerable", "negative", "unanswerable", "paraphrase", "typo", "followup"}


def _visible(path_text: str, name: str) -> str:
    if name.endswith(".html"):
        main = re.search(r"<main>(.*)</main>", path_text, re.S)
        return re.sub(r"<[^>]+>", " ", main.group(1) if main else path_text).replace("&ndash;", "-")
    if name.endswith(".csv"):
        return " ".join(row[-1] for row in csv.reader(io.StringIO(path_text)))
    return path_text


@pytest.mark.parametrize("brand", sorted(answers.BRANDS))
def test_every_label_is_consistent_with_the_brand_documents(brand: str) -> None:
    questions = answers.load_questions(brand, "all")
    assert len({q.id for q in questions}) == len(questions)
    splits = {q.split for q in questions}
    assert {q.kind for q in questions} == KINDS
    if splits == {"holdout"}:  # the blind brand: nothing is calibrated on it
        assert not answers.load_questions(brand, "dev") and answers.load_questions(brand, "report")
    else:
        assert splits == {"dev", "test"}
        per_split = Counter((q.kind, q.split) for q in questions)
        for kind in KINDS:  # both splits hold every kind, in near-equal numbers
            assert abs(per_split[(kind, "dev")] - per_split[(kind, "test")]) <= 1, kind
    brand_file = answers.BRANDS[brand]
    listed = yaml.safe_load(brand_file.read_text())["knowledge"]["documents"]
    names = [d if isinstance(d, str) else d["file"] for d in listed]
    texts = {n: _visible((brand_file.parent / n).read_text(), n).lower() for n in names}
    for q in questions:
        assert bool(q.history) == (q.kind == "followup"), q.id
        if q.kind == "unanswerable":
            assert q.facts == [] and q.sources == [], q.id
            continue
        assert q.facts and set(q.sources) <= set(texts), q.id
        source = " ".join(" ".join(texts[s].split()) for s in q.sources)
        for requirement in q.facts:
            assert any(" ".join(alt.lower().split()) in source for alt in requirement), (q.id, requirement)
        if q.kind == "negative":
            assert q.forbidden, q.id


def _reply(text: str, decisions: list[tuple[str, str, str]], cited: list[RetrievedChunk] | None = None):
    return answers.Reply(
        text=text,
        cited=[c.source for c in cited or []],
        cited_texts=cited or [],
        decisions=decisions,
        retrieved=["upload://orders.md"],
        latency_ms=10.0,
    )


QUESTION = answers.Question(
    id="t-1",
    split="test",
    kind="negative",
    question="Do you accept cryptocurrency?",
    history=[],
    facts=[["do not accept"]],
    sources=["orders.md"],
    forbidden=["we accept cryptocurrency", "yes"],
)
PASS = [("groundedness", "pass", "")]


def test_the_judge_counts_facts_forbidden_phrases_declines_and_uris() -> None:
    good = answers.judge(QUESTION, _reply("We do not accept checks or cryptocurrency.", PASS), brand="b")
    assert good.correct and not good.contradiction and good.source_hit and not good.internal_uri
    wrong = answers.judge(QUESTION, _reply("Yes, we accept cryptocurrency.", PASS), brand="b")
    assert not wrong.correct and "forbidden" in wrong.contradiction
    declined = answers.judge(QUESTION, _reply("Sorry.", [("answerability", "decline", "")]), brand="b")
    assert declined.declined and not declined.correct
    uri = answers.judge(QUESTION, _reply("See upload://orders.md: we do not accept it.", PASS), brand="b")
    assert uri.internal_uri
    # "yes" is matched as a word, not inside "eyes"
    assert not answers.has_phrase("Keep your eyes open: we do not accept it.", "yes")


def test_the_judge_checks_a_reply_against_its_cited_passage() -> None:
    passage = RetrievedChunk(
        chunk_id="p", source="orders.md", heading_path="", score=0.5, text="We do not accept cryptocurrency."
    )
    unlabelled = answers.Question(**{**QUESTION.__dict__, "forbidden": []})
    outcome = answers.judge(unlabelled, _reply("We accept cryptocurrency.", PASS, [passage]), brand="b")
    assert "polarity" in outcome.contradiction and not outcome.correct


def test_summary_and_targets() -> None:
    unanswerable = answers.Question(**{**QUESTION.__dict__, "id": "t-2", "kind": "unanswerable"})
    unanswerable = answers.Question(**{**unanswerable.__dict__, "facts": [], "sources": [], "forbidden": []})
    outcomes = [
        answers.judge(QUESTION, _reply("We do not accept cryptocurrency.", PASS), brand="b"),
        answers.judge(unanswerable, _reply("Sorry.", [("answerability", "decline", "")]), brand="b"),
    ]
    summary = answers.summarise(outcomes)
    assert summary["correct"] == 1.0 and summary["unanswerable_declined"] == 1.0
    assert summary["decline_precision"] == 1.0 and summary["contradictions"] == 0
    assert answers.failed_targets(summary) == []
    assert answers.failed_targets({**summary, "contradictions": 1}) == ["contradictions 1 (target == 0)"]
