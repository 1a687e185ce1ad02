"""Background replicas lower the CPU priority of all their threads; the gateway keeps its own."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# Run in a child process: niceness cannot be raised back without privileges, and the test process
# must keep its own priority.
_CHILD = textwrap.dedent(
    """
    import json, os, sys, threading
    from common.config import ServiceEndpoints
    from deployments.replica import lower_priority, start_replica

    base = os.getpriority(os.PRIO_PROCESS, 0)
    started = threading.Event(); stop = threading.Event()
    def idle():
        started.set(); stop.wait()
    early = threading.Thread(target=idle, daemon=True); early.start(); started.wait()
    named = {"main": threading.get_native_id(), "early": early.native_id}
    mode = sys.argv[1]
    endpoints = ServiceEndpoints(database_url="postgresql+psycopg://x@127.0.0.1/x", redis_url="redis://127.0.0.1:1/0")
    changed = None
    if mode == "background":
        start_replica(endpoints, background=True)
    elif mode == "gateway":
        start_replica(endpoints, background=False)
    else:
        changed = [lower_priority(int(mode)), lower_priority(int(mode) - 1)]
    late = {}
    t = threading.Thread(target=lambda: late.update(nice=os.getpriority(os.PRIO_PROCESS, 0)))
    t.start(); t.join()
    def nice_of(tid):
        try:
            return os.getpriority(os.PRIO_PROCESS, tid)
        except ProcessLookupError:  # a thread that just ended (the one above) may still be listed
            return None
    # The late thread has finished its work once join() returns, but its kernel task can still be
    # listed for a moment (seen in CI): report the two threads that exist throughout by id, and the
    # set of nice values over everything listed.
    listed = {int(x): nice_of(int(x)) for x in os.listdir("/proc/self/task")}
    every = sorted({nice for nice in listed.values() if nice is not None})
    threads = [nice_of(named["main"]), nice_of(named["early"])]
    stop.set(); early.join()
    result = {"threads": threads, "every": every, "late": late["nice"], "changed": changed}
    print(json.dumps({**result, "base": base}))
    """
)


def _run(mode: str, **env: str) -> dict[str, object]:
    import os

    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux")


@pytest.fixture(autouse=True)
def _not_already_nicer() -> None:
    import os

    if os.getpriority(os.PRIO_PROCESS, 0) >= 5:
        pytest.skip("the test process already runs at nice >= 5; the child could not show a change")


def test_background_replica_lowers_every_thread_including_ones_started_before_and_after() -> None:
    result = _run("background", RAY__BACKGROUND_NICE="6")
    assert result["threads"] == [6, 6]  # main thread and the thread that already ran
    assert result["every"] == [6]
    assert result["late"] == 6  # a thread started afterwards inherits it


def test_gateway_replica_keeps_its_priority() -> None:
    result = _run("gateway", RAY__BACKGROUND_NICE="6")
    assert result["threads"] == [result["base"], result["base"]]
    assert result["every"] == [result["base"]]
    assert result["late"] == result["base"]


def test_lower_priority_never_raises_priority_back() -> None:
    result = _run("5")
    assert result["changed"] == [2, 0]  # second call asks for 4: already nicer, nothing changes
    assert result["threads"] == [5, 5]
    assert result["every"] == [5]


def test_background_nice_is_bounded() -> None:
    from pydantic import ValidationError

    from common.config import Settings

    assert Settings().ray.background_nice == 10
    with pytest.raises(ValidationError):
        Settings(ray={"background_nice": 20})
