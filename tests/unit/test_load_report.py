"""The load benchmark's verdict: which baseline the overhead target uses, and what fails the run."""

from __future__ import annotations

from bench.load import HttpPhase, LocustRun, Summary, _load_report, _parser


def _phase(label: str, chat_p95: float, *, ack_p99: float = 40.0, errors: int = 0) -> HttpPhase:
    chat = Summary("web chat turn", 100, 0, 2.0, chat_p95 - 50, chat_p95, chat_p95 + 50)
    ack = Summary("webhook ack", 100, 0, 2.0, 10, 20, ack_p99)
    total = Summary(label, 200, 0, 4.0, 100, chat_p95, chat_p95 + 50)
    errs = {"boom": errors} if errors else {}
    run = LocustRun(100, total, 0, errs, {"web chat turn": chat, "webhook ack": ack})
    return HttpPhase(label, run, (100, 100, [300.0, 320.0, 400.0]))


def _direct(p95: float) -> Summary:
    return Summary("in-process, direct calls (no HTTP)", 100, 0, 2.0, p95 - 30, p95, p95 + 30)


OPTS = _parser().parse_args([])  # stub 200 ms, ratio target 1.5, ack p99 target 100 ms


def test_the_target_is_measured_against_the_direct_calls() -> None:
    # Net of the 200 ms stub: Serve 100 ms, direct 50 ms (2.0: fails), single process 100 ms (1.0).
    report, failed = _load_report(_phase("Ray Serve (HTTP)", 300), _phase("single", 300), _direct(250), OPTS)
    assert failed
    assert "direct calls in-process (no HTTP server, no client): 2.00 (target < 1.5)" in report
    assert "same customers: 1.00 (reference)" in report
    assert "overhead ratio: NOT met" in report


def test_within_the_ratio_and_ack_targets_the_run_passes() -> None:
    report, failed = _load_report(_phase("Ray Serve (HTTP)", 270), None, _direct(260), OPTS)
    assert not failed, report
    assert "Targets: real errors 0: met; Serve ack p99 < 100 ms: met; overhead ratio: met." in report


def test_a_slow_ack_or_a_real_error_fails_the_run() -> None:
    _, slow_ack = _load_report(_phase("Ray Serve (HTTP)", 270, ack_p99=150), None, _direct(260), OPTS)
    _, errored = _load_report(_phase("Ray Serve (HTTP)", 270, errors=1), None, _direct(260), OPTS)
    assert slow_ack and errored


def test_a_baseline_error_is_shown_but_is_not_the_systems() -> None:
    report, failed = _load_report(
        _phase("Ray Serve (HTTP)", 270), _phase("single", 270, errors=1), _direct(260), OPTS
    )
    assert not failed
    assert "single, all requests: 200, real errors 1" in report and "Real errors: boom x1" in report


def test_without_the_direct_baseline_the_http_one_is_the_reference() -> None:
    opts = _parser().parse_args(["--baselines", "http"])
    report, failed = _load_report(_phase("Ray Serve (HTTP)", 300), _phase("single", 280), None, opts)
    assert not failed
    assert "same customers: 1.25 (target < 1.5)" in report
