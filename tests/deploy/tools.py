"""Shared helpers for the delivery tests: repo paths and the offline CLI tools installed in the venv."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """Path of a console script installed next to this interpreter (dev extra), else skip."""
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} not installed (pip install -e '.[dev]')")
    return str(path)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a tool without a shell; output captured for the assertion message."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
