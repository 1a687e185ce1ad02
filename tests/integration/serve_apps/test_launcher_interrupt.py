"""Ctrl-C on `make run` at any moment of start-up leaves nothing running, and the next start is clean.

Done as a person would: the launcher runs in a process group of its own (a terminal's foreground group,
as under `make run`) on the embedded Postgres and Valkey, and SIGINT goes to that whole group. Every
process of a run (the launcher, Ray's, Postgres', Valkey's) carries a marker in its environment, which
is how the test finds what is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[3]
MARKER = "EMA_LAUNCHER_TEST_RUN"
START_TIMEOUT_S = 420.0  # a cold start on 2 busy cores: Ray, four Serve deployments, the demo ingestion
GONE_WITHIN_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environ(proc: psutil.Process) -> dict[str, str]:
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return {}
        return proc.environ()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return {}


def processes_of(run_id: str) -> list[str]:
    """``"pid name"`` of every live process whose environment carries ``run_id``."""
    left = []
    for proc in psutil.process_iter(["pid", "name"]):
        if _environ(proc).get(MARKER) == run_id:
            left.append(f"{proc.info['pid']} {proc.info['name']}")
    return left


class Run:
    """One launcher process, its stderr phases and stdout collected by reader threads."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.run_id = uuid.uuid4().hex
        # No endpoint of the suite's own: this run starts its embedded servers and its own Ray.
        configured = ("DATABASE", "REDIS", "QDRANT", "RAY_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(configured)}
        env.update(
            {
                MARKER: self.run_id,
                "DATA_DIR": str(data_dir),
                "REDIS__EMBEDDED_PORT": str(_free_port()),
                "RAY__HTTP_PORT": str(_free_port()),
                "LOG_JSON": "true",
                "RAY_USAGE_STATS_ENABLED": "0",
                "HF_HUB_OFFLINE": "1",
            }
        )
        self.phases: list[str] = []
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._seen = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serve_apps.launcher", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, like `make run` in a terminal
        )
        threading.Thread(target=self._read_stderr, daemon=True).start()
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            phase = None
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    event = {}
                if event.get("event") == "launcher.phase":
                    phase = str(event.get("phase"))
            with self._seen:
                self.stderr.append(line)
                if phase:
                    self.phases.append(phase)
                self._seen.notify_all()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._seen:
                self.stdout.append(line)

    def wait_for_phase(self, phase: str, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        with self._seen:
            while phase not in self.phases:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = "".join(self.stderr[-30:])
                    pytest.fail(f"launcher never reached {phase!r} (phases {self.phases}):\n{tail}")
                self._seen.wait(1.0)

    def interrupt(self, times: int = 1) -> None:
        for _ in range(times):
            os.killpg(self.proc.pid, signal.SIGINT)  # the whole group, as the terminal does
            time.sleep(0.5)

    def assert_all_gone(self, moment: str) -> float:
        """Waits until no process of this run is left; returns how long that took."""
        started = time.monotonic()
        try:
            self.proc.wait(GONE_WITHIN_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{moment}: the launcher did not exit within {GONE_WITHIN_S:.0f} s")
        left = processes_of(self.run_id)
        while left and time.monotonic() - started < GONE_WITHIN_S:
            time.sleep(1.0)
            left = processes_of(self.run_id)
        if left:
            self.kill()
        assert not left, f"{moment}: still running {GONE_WITHIN_S:.0f} s after Ctrl-C: {left}"
        assert "Traceback" not in "".join(self.stderr), f"{moment}: " + "".join(self.stderr[-30:])
        return time.monotonic() - started

    def kill(self) -> None:
        """Last resort so that one failing test does not leave a stack running for the next ones."""
        for entry in processes_of(self.run_id):
            pid = int(entry.split()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"


def test_ctrl_c_at_each_moment_of_start_up_leaves_nothing_and_the_next_start_is_clean(
    data_dir: Path,
) -> None:
    # In the order a person meets them; each run starts on the data directory the previous one left.
    for moment in ("migrations", "serve", "ingest", "ready"):
        run = Run(data_dir)
        try:
            run.wait_for_phase(moment)
            run.interrupt()
            took = run.assert_all_gone(f"Ctrl-C during {moment!r}")
        finally:
            run.kill()
        assert run.proc.returncode == 130, f"{moment}: exit code {run.proc.returncode}"
        print(f"LAUNCHER Ctrl-C during {moment}: everything gone in {took:.1f} s")
    # After four interrupted starts the same data directory still gives a full, clean start.
    run = Run(data_dir, "--exit-after-start")
    try:
        run.wait_for_phase("ready")
        run.assert_all_gone("a start after the interrupted ones")
    finally:
        run.kill()
    assert run.proc.returncode == 0
    assert any("knowledge chunks indexed" in line for line in run.stdout)


def test_a_second_ctrl_c_exits_at_once_and_still_leaves_nothing(data_dir: Path) -> None:
    run = Run(data_dir)
    try:
        run.wait_for_phase("serve")
        started = time.monotonic()
        run.interrupt(times=2)
        try:
            run.proc.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail("a second Ctrl-C did not make the launcher exit within 10 s")
        forced_in = time.monotonic() - started
        run.assert_all_gone("after a second Ctrl-C")
    finally:
        run.kill()
    assert run.proc.returncode == 128 + signal.SIGINT
    print(f"LAUNCHER second Ctrl-C: launcher gone in {forced_in:.1f} s")
    # The forced exit (Ray killed with the launcher, the servers stopped by their own child) still leaves
    # a data directory the next start uses.
    run = Run(data_dir, "--no-demo", "--exit-after-start")
    try:
        run.wait_for_phase("ready")
        run.assert_all_gone("a start after the forced exit")
    finally:
        run.kill()
    assert run.proc.returncode == 0
