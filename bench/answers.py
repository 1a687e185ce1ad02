"""Answer-quality evaluation on labelled question sets (``make eval-answers``).

    python -m bench.answers                         # test split + held-out brand, embedded model and stub
    python -m bench.answers --split dev --errors    # calibrate on dev; list every miss
    python -m bench.answers --model stub --brand harbor-fitness
    python -m bench.answers --base-url http://127.0.0.1:8000          # a running system (make run's key)

Three brands, each a ``brand.yaml`` with its documents: the demo (``pipelines/demo``), Harbor Fitness
(``tests/eval/answers/brands/harbor-fitness``), written for this evaluation in another domain, and
Saltmarsh Inn (a hotel), written blind by someone who had not seen the answering code and held out:
nothing is tuned on it. Their question sets (``tests/eval/answers/sets/*.jsonl``) hold answerable
questions with the facts a correct answer must contain and the source that holds them, near-miss
questions the knowledge does not cover, questions whose honest answer is "no", paraphrases, typos and
follow-ups; each question of the first two belongs to the ``dev`` split (thresholds are calibrated on it)
or the ``test`` split (the figures reported); Saltmarsh Inn's are all ``holdout``.

In process, each brand is seeded into a fresh Postgres database and indexed through the knowledge
service, and every question is asked by a new customer through ``MessageOrchestrator.handle`` (the
same pipeline as ``POST /v1/messages/inbound``); follow-ups first send their history in the same
conversation. ``--base-url`` asks a running system over HTTP instead, each brand onboarded through the
public API as a new business (operator key → tenant → brand → documents).

Figures: correct answers (every fact present, nothing forbidden, not declined), source hit@5 (the
labelled source among the top five retrieved passages for the question as the pipeline searched it;
over HTTP only the cited sources are visible), unanswerable declined, answerable wrongly declined,
precision and recall of declining, contradictions (a forbidden phrase in the answer, or an answer
sentence whose polarity, quantity or names disagree with its cited passage), internal URIs shown,
median answer length and p50 latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.llm_stub import FixedLatencyQuoteModel
from common import text
from common.access.management import PersonaIn
from common.config import Settings
from common.conversation import answering, guardrails
from common.domain import Channel, InboundMessage
from common.schemas import KnowledgeUploadIn, RetrievedChunk
from pipelines.demo import BRAND_FILE, brand_documents, load_demo_brand

HERE = Path(__file__).resolve().parent.parent / "tests" / "eval" / "answers"
BRANDS = {
    "acme-outdoor": BRAND_FILE,
    "harbor-fitness": HERE / "brands" / "harbor-fitness" / "brand.yaml",
    "saltmarsh-inn": HERE / "brands" / "saltmarsh-inn" / "brand.yaml",
}
SETS = HERE / "sets"
#: What ``--split report`` (the default) holds: the test split and the held-out brand.
REPORTED = ("test", "holdout")
ANSWERABLE_KINDS = ("answerable", "negative", "paraphrase", "typo", "followup")
#: What a customer must never see in a reply: a storage URI instead of a document's name.
INTERNAL_URI = re.compile(r"\b(?:upload|s3|file|gs)://\S+")
#: Decisions that mean "the knowledge does not cover this": the fallback and an offer of a person.
DECLINED = {(answering.RULE, "decline"), (guardrails.RULE, "escalate")}
TARGETS = {
    "contradictions": ("==", 0),
    "correct": (">=", 0.90),
    "unanswerable_declined": (">=", 0.90),
    "answerable_declined": ("<=", 0.05),
    "source_hit_at_5": (">=", 0.95),
    "median_chars": ("<=", 300),
    "internal_uris": ("==", 0),
}


@dataclass(frozen=True)
class Question:
    """One labelled question (a line of a set)."""

    id: str
    split: str
    kind: str
    question: str
    history: list[str]
    facts: list[list[str]]
    sources: list[str]
    forbidden: list[str]
    note: str = ""


@dataclass
class Reply:
    """What the system answered, as the evaluation sees it."""

    text: str
    cited: list[str]
    cited_texts: list[RetrievedChunk]
    decisions: list[tuple[str, str, str]]
    retrieved: list[str]
    latency_ms: float


@dataclass
class Outcome:
    """One question's result."""

    id: str
    brand: str
    kind: str
    question: str
    answer: str
    correct: bool
    declined: bool
    contradiction: str
    source_hit: bool | None
    internal_uri: bool
    chars: int
    latency_ms: float
    decisions: list[tuple[str, str, str]] = field(default_factory=list)


def load_questions(brand: str, split: str) -> list[Question]:
    """The set of ``brand`` (``split``: dev, test or all)."""
    path = SETS / f"{brand}.jsonl"
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            q = Question(**json.loads(line))
            if split == "all" or q.split == split or (split == "report" and q.split in REPORTED):
                out.append(q)
    return out


def _normal(text: str) -> str:
    return " ".join(text.lower().replace("\u2019", "'").split())


def has_phrase(answer: str, phrase: str) -> bool:
    """``phrase`` in ``answer``: case-insensitive, whitespace collapsed, whole words at its edges."""
    pattern = r"(?<!\w)" + re.escape(_normal(phrase)) + r"(?!\w)"
    return re.search(pattern, _normal(answer)) is not None


def judge(q: Question, reply: Reply, *, brand: str) -> Outcome:
    """Score one reply against its labels."""
    declined = any((rule, action) in DECLINED for rule, action, _ in reply.decisions)
    forbidden = [f for f in q.forbidden if has_phrase(reply.text, f)]
    contradiction = f"forbidden: {', '.join(forbidden)}" if forbidden else ""
    if not contradiction and not declined and reply.cited_texts:
        for sentence in text.sentences(reply.text):
            found = guardrails.contradiction(sentence, reply.cited_texts)
            if found:
                contradiction = found
                break
    if q.kind == "unanswerable":
        correct = declined
    else:
        facts_ok = all(any(_normal(alt) in _normal(reply.text) for alt in req) for req in q.facts)
        correct = not declined and facts_ok and not contradiction
    source_hit = None
    if q.sources:
        names = {s.rsplit("/", 1)[-1] for s in (reply.retrieved or reply.cited)}
        source_hit = any(s in names for s in q.sources)
    return Outcome(
        id=q.id,
        brand=brand,
        kind=q.kind,
        question=q.question,
        answer=reply.text,
        correct=correct,
        declined=declined,
        contradiction=contradiction,
        source_hit=source_hit,
        internal_uri=bool(INTERNAL_URI.search(reply.text)),
        chars=len(reply.text),
        latency_ms=reply.latency_ms,
        decisions=reply.decisions,
    )


def summarise(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The figures of one run (fractions in 0..1)."""
    answerable = [o for o in outcomes if o.kind in ANSWERABLE_KINDS]
    unanswerable = [o for o in outcomes if o.kind == "unanswerable"]
    hits = [o.source_hit for o in outcomes if o.source_hit is not None]
    declined = [o for o in outcomes if o.declined]
    true_declines = sum(o.kind == "unanswerable" for o in declined)
    answered = [o for o in outcomes if not o.declined]
    return {
        "questions": len(outcomes),
        "correct": _share(sum(o.correct for o in answerable), len(answerable)),
        "by_kind": {
            kind: _share(
                sum(o.correct for o in outcomes if o.kind == kind), sum(o.kind == kind for o in outcomes)
            )
            for kind in (*ANSWERABLE_KINDS, "unanswerable")
            if any(o.kind == kind for o in outcomes)
        },
        "source_hit_at_5": _share(sum(hits), len(hits)),
        "unanswerable_declined": _share(sum(o.declined for o in unanswerable), len(unanswerable)),
        "answerable_declined": _share(sum(o.declined for o in answerable), len(answerable)),
        "decline_precision": _share(true_declines, len(declined)),
        "decline_recall": _share(true_declines, len(unanswerable)),
        "contradictions": sum(bool(o.contradiction) for o in outcomes),
        "contradictions_caught": sum(
            any(rule == guardrails.CONTRADICTION_RULE for rule, _, _ in o.decisions) for o in outcomes
        ),
        "internal_uris": sum(o.internal_uri for o in outcomes),
        "median_chars": statistics.median([o.chars for o in answered]) if answered else 0,
        "p50_latency_ms": round(statistics.median([o.latency_ms for o in outcomes]), 1) if outcomes else 0.0,
    }


def _share(n: int, d: int) -> float:
    return round(n / d, 4) if d else 1.0


def failed_targets(summary: dict[str, Any]) -> list[str]:
    """The targets a summary misses, as readable lines."""
    missed = []
    for key, (op, bound) in TARGETS.items():
        value = summary[key]
        ok = value == bound if op == "==" else value >= bound if op == ">=" else value <= bound
        if not ok:
            missed.append(f"{key} {value} (target {op} {bound})")
    return missed


def uploaded(brand_file: Path) -> KnowledgeUploadIn:
    """The brand's documents named as the multipart upload names them (``upload://<file>``), so an
    internal URI leaking into a reply would show."""
    upload = brand_documents(brand_file)
    documents = [d.model_copy(update={"uri": f"upload://{d.uri}"}) for d in upload.documents]
    return upload.model_copy(update={"documents": documents})


# --- running the questions ---------------------------------------------------------------------------

Ask = Callable[[Question, str], Awaitable[Reply]]


async def run_questions(questions: Sequence[Question], ask: Ask, *, brand: str, run_id: str) -> list[Outcome]:
    """Ask each question as a new customer (follow-ups after their history) and judge the replies."""
    outcomes = []
    for q in questions:
        customer = f"eval-{run_id}-{q.id}"
        for earlier in q.history:
            await ask(Question(**{**asdict(q), "question": earlier, "history": []}), customer)
        outcomes.append(judge(q, await ask(q, customer), brand=brand))
    return outcomes


@contextmanager
def _environment(updates: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _StubModel(FixedLatencyQuoteModel):
    """The load benchmark's fixed-answer STUB (quotes the first sentence of passage [1]), no latency."""

    async def aclose(self) -> None:
        return None


async def run_in_process(model: str, brands: Sequence[str], split: str, data_dir: Path) -> list[Outcome]:
    """Every brand's questions through the in-process pipeline; ``model``: ``embedded`` or ``stub``."""
    from common.db.migrate import upgrade
    from pipelines.demo import seed_brand
    from serve_apps.inprocess import InProcessBackend
    from serve_apps.launcher import backing_services

    settings = Settings(data_dir=data_dir)
    outcomes: list[Outcome] = []
    with backing_services(settings) as stack:
        await asyncio.to_thread(upgrade, stack.endpoints.database_url)
        chat_model = _StubModel(latency_ms=0) if model == "stub" else None
        backend = InProcessBackend(settings, stack.endpoints, chat_model=chat_model)
        try:
            for name in brands:
                questions = load_questions(name, split)
                if not questions:
                    continue
                seeded = await seed_brand(backend.sessionmaker, BRANDS[name])
                brand = seeded.brand
                await backend.knowledge.ingest(brand.tenant_id, brand.id, uploaded(BRANDS[name]))
                history: dict[str, list[str]] = {}

                async def ask(
                    q: Question, customer: str, brand: Any = brand, history: dict[str, list[str]] = history
                ) -> Reply:
                    started = time.perf_counter()
                    reply = await backend.orchestrator.handle(
                        InboundMessage(
                            brand_id=brand.id, channel=Channel.WEBCHAT, customer_id=customer, text=q.question
                        )
                    )
                    latency = (time.perf_counter() - started) * 1000
                    earlier = history.setdefault(customer, [])
                    query = (
                        answering.retrieval_query(q.question, earlier)
                        if settings.answers.followups
                        else q.question
                    )
                    earlier.append(q.question)
                    top = await backend.knowledge.retrieve(brand.tenant_id, brand.id, query, 5)
                    by_id = {c.chunk_id: c for c in top}
                    cited = [by_id.get(c.chunk_id) for c in reply.citations]
                    missing = [c.chunk_id for c in reply.citations if c.chunk_id not in by_id]
                    if missing:  # a cited passage outside the top five: fetch it for the contradiction check
                        wider = await backend.knowledge.retrieve(brand.tenant_id, brand.id, query, 20)
                        cited = [
                            next((w for w in wider if w.chunk_id == c.chunk_id), None)
                            for c in reply.citations
                        ]
                    return Reply(
                        text=reply.text,
                        cited=[c.source for c in reply.citations],
                        cited_texts=[c for c in cited if c is not None],
                        decisions=[(d.rule, d.action, d.reason) for d in reply.guardrails],
                        retrieved=[c.source for c in top],
                        latency_ms=latency,
                    )

                outcomes += await run_questions(questions, ask, brand=name, run_id=uuid.uuid4().hex[:8])
        finally:
            await backend.aclose()
    return outcomes


async def run_over_http(
    base_url: str,
    operator_key: str,
    brands: Sequence[str],
    split: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[Outcome]:
    """Every brand's questions through ``POST /v1/messages/inbound`` of a running system.

    Each brand is onboarded as a new business would be, through the public API only: the operator key
    creates its tenant (``POST /v1/tenants``, a fresh slug per run), the tenant's admin key creates the
    brand with its persona (``POST /v1/brands``) and uploads its documents
    (``POST /v1/brands/{id}/knowledge``), and every question comes from a new customer. ``transport``:
    another way to reach the system (the tests' in-process gateway).
    """
    from pipelines.demo import load_demo_brand

    outcomes: list[Outcome] = []
    run_id = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=base_url, timeout=120, transport=transport) as client:
        for name in brands:
            questions = load_questions(name, split)
            if not questions:
                continue
            data = load_demo_brand(BRANDS[name])
            created = await client.post(
                "/v1/tenants",
                json={
                    "slug": f"{data.tenant.slug}-eval-{run_id}",
                    "name": f"{data.tenant.name} (evaluation)",
                },
                headers={"authorization": f"Bearer {operator_key}"},
            )
            _raise_for(
                created, "creating the evaluation tenant (is --operator-key the system's operator key?)"
            )
            admin = {"authorization": f"Bearer {created.json()['admin_key']['token']}"}
            persona = PersonaIn.from_domain(data.brand.persona).model_dump(mode="json")
            brand = await client.post(
                "/v1/brands", json={"slug": data.brand.slug, "name": data.brand.name, "persona": persona},
                headers=admin,
            )  # fmt: skip
            _raise_for(brand, "creating the evaluation brand")
            brand_id = uuid.UUID(brand.json()["id"])
            upload = uploaded(BRANDS[name]).model_dump(mode="json")
            ingested = await client.post(f"/v1/brands/{brand_id}/knowledge", json=upload, headers=admin)
            _raise_for(ingested, "uploading the evaluation documents")

            async def ask(
                q: Question, customer: str, brand_id: uuid.UUID = brand_id, admin: dict[str, str] = admin
            ) -> Reply:
                body = {"brand_id": str(brand_id), "customer_id": customer, "text": q.question}
                started = time.perf_counter()
                response = await client.post("/v1/messages/inbound", json=body, headers=admin)
                latency = (time.perf_counter() - started) * 1000
                _raise_for(response, "asking a question")
                data = response.json()
                cited = [c["source"] for c in data["citations"]]
                return Reply(
                    text=data["text"],
                    cited=cited,
                    cited_texts=[],  # passage texts are not exposed over HTTP: forbidden phrases only
                    decisions=[(d["rule"], d["action"], d.get("reason", "")) for d in data["guardrails"]],
                    retrieved=[],
                    latency_ms=latency,
                )

            outcomes += await run_questions(questions, ask, brand=name, run_id=run_id)
    return outcomes


def _raise_for(response: httpx.Response, doing: str) -> None:
    """A failed call ends the evaluation with what the system said, not a traceback."""
    if response.is_error:
        raise SystemExit(f"eval-answers: {doing} failed: HTTP {response.status_code} {response.text[:300]}")


# --- calibration ---------------------------------------------------------------------------------------

_FIGURES = re.compile(r"best=(-?[\d.]+) semantic=(-?[\d.]+) uncovered=([\d.]+) names=(\d+)")
#: Thresholds that decline nothing on their own: the run records every question's figures.
PERMISSIVE = {
    "ANSWERS__MIN_SCORE": "-100",
    "ANSWERS__MAX_UNCOVERED_SHARE": "1",
    "ANSWERS__NAMES_DECLINE": "false",
}


def calibrate(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The answerability thresholds that best separate unanswerable from answerable questions of a (dev)
    run made with :data:`PERMISSIVE` settings: most declined unanswerable minus wrongly declined
    answerable (Youden's J). The figures do not allow the issue's 90 % / 5 % on this data; see
    docs/QUALITY.md."""
    rows = []
    for o in outcomes:
        figures = next(
            (m for rule, _, why in o.decisions if rule == answering.RULE and (m := _FIGURES.search(why))),
            None,
        )
        values = tuple(float(v) for v in figures.groups()) if figures else None
        rows.append((o.kind == "unanswerable", values))
    best: tuple[float, dict[str, Any]] | None = None
    for names in (True, False):
        for min_score in [x / 40 for x in range(0, 60)]:
            for share in (0.0, 0.2, 0.25, 0.34, 0.4, 0.5, 0.67, 1.0):
                for sure in [x / 20 for x in range(4, 20)]:
                    declined_u = declined_a = n_u = n_a = 0
                    for unanswerable, v in rows:
                        declined = v is None or (
                            (names and v[3] > 0) or v[0] < min_score or (v[2] > share and v[1] < sure)
                        )
                        n_u += unanswerable
                        n_a += not unanswerable
                        declined_u += unanswerable and declined
                        declined_a += (not unanswerable) and declined
                    recall, wrong = declined_u / max(n_u, 1), declined_a / max(n_a, 1)
                    objective = recall - wrong
                    if best is None or objective > best[0]:
                        best = (objective, {
                            "names_decline": names, "min_score": min_score, "max_uncovered_share": share,
                            "sure_semantic": sure, "unanswerable_declined": round(recall, 3),
                            "answerable_declined": round(wrong, 3),
                        })  # fmt: skip
    return best[1] if best else {}


# --- report --------------------------------------------------------------------------------------------


def table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """The figures as a Markdown table, one row per (model, brand)."""
    head = (
        "| run | n | correct | hit@5 | unanswerable declined | answerable declined | decline P / R "
        "| contradictions (caught) | internal URIs | median chars | p50 ms |"
    )
    lines = [head, "|" + "---|" * 11]
    for label, s in rows:
        lines.append(
            f"| {label} | {s['questions']} | {s['correct']:.0%} | {s['source_hit_at_5']:.0%} "
            f"| {s['unanswerable_declined']:.0%} | {s['answerable_declined']:.0%} "
            f"| {s['decline_precision']:.0%} / {s['decline_recall']:.0%} "
            f"| {s['contradictions']} ({s['contradictions_caught']}) | {s['internal_uris']} "
            f"| {s['median_chars']:.0f} | {s['p50_latency_ms']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--split", choices=("report", "dev", "test", "holdout", "all"), default="report",
        help="report (default): the test split and the held-out brand",
    )  # fmt: skip
    parser.add_argument("--model", choices=("embedded", "stub", "both"), default="both")
    parser.add_argument("--brand", action="append", choices=sorted(BRANDS), help="default: every brand")
    parser.add_argument("--base-url", help="ask a running system over HTTP instead of in process")
    parser.add_argument(
        "--operator-key",
        default=os.environ.get("API__OPERATOR_KEY"),
        help="with --base-url: the system's operator key (default: $API__OPERATOR_KEY, else "
        ".data/operator.key as make run writes it)",
    )
    parser.add_argument("--json", type=Path, default=Path("test-artifacts/eval-answers.json"))
    parser.add_argument("--errors", action="store_true", help="list every wrong answer")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--calibrate", action="store_true", help="dev split, permissive thresholds: print the calibrated ones"
    )
    opts = parser.parse_args(argv)
    brands = opts.brand or sorted(BRANDS)
    if opts.calibrate:
        model = "stub" if opts.model == "both" else opts.model
        with (
            tempfile.TemporaryDirectory(prefix="eval-answers-") as tmp,
            _environment({**PERMISSIVE, "HF_HUB_OFFLINE": "1"}),
        ):
            outcomes = asyncio.run(run_in_process(model, brands, "dev", Path(tmp)))
        print(json.dumps(calibrate(outcomes), indent=2))
        return 0
    for name in brands:
        load_demo_brand(BRANDS[name])  # fail early on a broken brand file
    runs: list[tuple[str, list[Outcome]]] = []
    if opts.base_url:
        key = opts.operator_key
        local = Path(".data") / "operator.key"
        if not key and local.is_file():
            key = local.read_text(encoding="utf-8").strip()
        if not key:
            parser.error("--base-url needs --operator-key (or API__OPERATOR_KEY, or .data/operator.key)")
        runs.append(("http", asyncio.run(run_over_http(opts.base_url, key, brands, opts.split))))
    else:
        models = ("embedded", "stub") if opts.model == "both" else (opts.model,)
        for model in models:
            with (
                tempfile.TemporaryDirectory(prefix="eval-answers-") as tmp,
                _environment({"HF_HUB_OFFLINE": "1"}),
            ):
                runs.append((model, asyncio.run(run_in_process(model, brands, opts.split, Path(tmp)))))
    rows: list[tuple[str, dict[str, Any]]] = []
    for label, outcomes in runs:
        for name in brands:
            mine = [o for o in outcomes if o.brand == name]
            if mine:  # the holdout brand has no dev or test questions, the others no holdout ones
                rows.append((f"{label} · {name}", summarise(mine)))
        rows.append((f"**{label} · all**", summarise(outcomes)))
    print(f"split: {opts.split}\n")
    print(table(rows))
    missed: list[str] = []
    for label, outcomes in runs:
        for line in failed_targets(summarise(outcomes)):
            missed.append(f"{label}: {line}")
    print("\ntargets: " + ("all met" if not missed else "; ".join(missed)))
    if opts.errors:
        for label, outcomes in runs:
            for o in outcomes:
                if not o.correct or o.contradiction:
                    print(f"\n[{label}] {o.id} {o.kind}: {o.question}\n  -> {o.answer[:300]!r}")
                    print(f"  declined={o.declined} hit={o.source_hit} contradiction={o.contradiction!r}")
                    print(f"  decisions={[(r, a, why[:80]) for r, a, why in o.decisions]}")
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "split": opts.split,
        "runs": {label: {"summary": summarise(o), "outcomes": [asdict(x) for x in o]} for label, o in runs},
        "rows": {label: s for label, s in rows},
    }
    opts.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"\nwritten: {opts.json}")
    return 1 if opts.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
