"""Measure the safety guardrails on the labelled sets in this folder.

    python -m tests.eval.run_eval              # print the figures table (Markdown)
    python -m tests.eval.run_eval --errors     # also list every miss and false alarm
    python -m tests.eval.run_eval --write-doc  # replace the table in docs/GUARDRAILS.md

PII is scored per span and per kind: a predicted span is a true positive when a gold span of the same
kind overlaps it by at least half of their union (IoU >= 0.5); exact boundary matches are counted too.
Injection and toxicity are scored per text. The refusal rate is the share of ordinary customer
questions the input guardrail would refuse (flagged as injection or as toxic).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.conversation.safety import check_toxicity, detect_injection, find_pii

HERE = Path(__file__).parent
DOC = HERE.parent.parent / "docs" / "GUARDRAILS.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"
MIN_IOU = 0.5


@dataclass
class Counts:
    """True/false positives and false negatives, with the derived figures."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class Report:
    """Everything one evaluation run measured."""

    pii: dict[str, Counts] = field(default_factory=dict)
    pii_exact: int = 0
    pii_rows: int = 0
    injection: Counts = field(default_factory=Counts)
    injection_rows: int = 0
    refused: int = 0
    benign_rows: int = 0
    toxicity: Counts = field(default_factory=Counts)
    toxicity_rows: int = 0
    mean_ms: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def refusal_rate(self) -> float:
        return self.refused / self.benign_rows if self.benign_rows else 0.0


def load(name: str) -> list[dict[str, Any]]:
    """One labelled set, one JSON object per line."""
    with (HERE / name).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def evaluate() -> Report:
    """Run every detector over its labelled set."""
    report = Report()
    _pii(report, load("pii_set.jsonl"))
    _injection(report, load("injection_set.jsonl"))
    _refusals(report, load("benign_questions.jsonl"))
    _toxicity(report, load("toxicity_set.jsonl"))
    return report


def _iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union else 0.0


def _pii(report: Report, rows: list[dict[str, Any]]) -> None:
    report.pii_rows = len(rows)
    total = report.pii.setdefault("all", Counts())
    started = time.perf_counter()
    for row in rows:
        predicted = [(f.kind.value, f.start, f.end) for f in find_pii(row["text"])]
        gold = [(s["kind"], s["start"], s["end"]) for s in row["spans"]]
        unmatched = list(gold)
        for kind, start, end in predicted:
            counts = report.pii.setdefault(kind, Counts())
            match = next(
                (g for g in unmatched if g[0] == kind and _iou(g[1:], (start, end)) >= MIN_IOU), None
            )
            if match is None:
                counts.fp += 1
                total.fp += 1
                report.errors.append(f"pii FP {kind}: {row['text'][start:end]!r} in {row['text']!r}")
                continue
            unmatched.remove(match)
            counts.tp += 1
            total.tp += 1
            report.pii_exact += match[1:] == (start, end)
        for kind, start, end in unmatched:
            report.pii.setdefault(kind, Counts()).fn += 1
            total.fn += 1
            report.errors.append(f"pii FN {kind}: {row['text'][start:end]!r} in {row['text']!r}")
    report.mean_ms["find_pii"] = (time.perf_counter() - started) * 1000 / max(len(rows), 1)


def _injection(report: Report, rows: list[dict[str, Any]]) -> None:
    report.injection_rows = len(rows)
    started = time.perf_counter()
    for row in rows:
        verdict = detect_injection(row["text"])
        if verdict.is_injection and row["label"]:
            report.injection.tp += 1
        elif verdict.is_injection:
            report.injection.fp += 1
            report.errors.append(f"injection FP {verdict.rules}: {row['text']!r}")
        elif row["label"]:
            report.injection.fn += 1
            report.errors.append(f"injection FN ({row['category']}, {verdict.score}): {row['text']!r}")
    report.mean_ms["detect_injection"] = (time.perf_counter() - started) * 1000 / max(len(rows), 1)


def _refusals(report: Report, rows: list[dict[str, Any]]) -> None:
    report.benign_rows = len(rows)
    for row in rows:
        injection, toxicity = detect_injection(row["text"]), check_toxicity(row["text"])
        if injection.is_injection or toxicity.is_toxic:
            report.refused += 1
            report.errors.append(f"refused benign {injection.rules}{toxicity.terms}: {row['text']!r}")


def _toxicity(report: Report, rows: list[dict[str, Any]]) -> None:
    report.toxicity_rows = len(rows)
    started = time.perf_counter()
    for row in rows:
        verdict = check_toxicity(row["text"])
        if verdict.is_toxic and row["label"]:
            report.toxicity.tp += 1
        elif verdict.is_toxic:
            report.toxicity.fp += 1
            report.errors.append(f"toxicity FP {verdict.terms}: {row['text']!r}")
        elif row["label"]:
            report.toxicity.fn += 1
            report.errors.append(f"toxicity FN ({verdict.score}): {row['text']!r}")
    report.mean_ms["check_toxicity"] = (time.perf_counter() - started) * 1000 / max(len(rows), 1)


def render(report: Report) -> str:
    """The figures as a Markdown table."""
    lines = [
        "| detector | set | precision | recall | F1 |",
        "|---|---|---|---|---|",
    ]
    for kind in ("email", "phone", "card", "iban", "address", "all"):
        c = report.pii.get(kind, Counts())
        label = "PII, all kinds" if kind == "all" else f"PII: {kind}"
        lines.append(
            f"| {label} | {c.tp + c.fn} gold spans | {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} |"
        )
    c = report.injection
    lines.append(
        f"| prompt injection | {report.injection_rows} texts ({c.tp + c.fn} attacks) "
        f"| {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} |"
    )
    c = report.toxicity
    lines.append(
        f"| toxicity | {report.toxicity_rows} texts ({c.tp + c.fn} toxic) "
        f"| {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} |"
    )
    total = report.pii.get("all", Counts())
    timing = ", ".join(f"`{name}` {ms:.2f} ms" for name, ms in report.mean_ms.items())
    lines += [
        "",
        f"- Input guardrail refusal rate on {report.benign_rows} ordinary customer questions (en/es/fr/de): "
        f"**{report.refusal_rate:.1%}** ({report.refused} refused).",
        f"- PII spans matched with exact boundaries: {report.pii_exact} of {total.tp} "
        f"({report.pii_rows} texts; a match needs IoU >= {MIN_IOU}).",
        f"- Mean time per text on the sets (one CPU core, includes the eval loop): {timing}.",
    ]
    return "\n".join(lines)


def write_doc(table: str) -> None:
    """Replace the figures block of docs/GUARDRAILS.md."""
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{table}\n{END}{tail}", encoding="utf-8")


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--errors", action="store_true", help="list misses and false alarms")
    parser.add_argument("--write-doc", action="store_true", help=f"update {DOC.name}")
    args = parser.parse_args()
    report = evaluate()
    table = render(report)
    print(table)
    if args.errors:
        print("\n".join(["", *report.errors]))
    if args.write_doc:
        write_doc(table)


if __name__ == "__main__":
    main()
