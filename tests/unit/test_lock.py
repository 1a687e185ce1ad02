"""The lock (requirements/) matches pyproject.toml, and the check notices when it does not."""

from __future__ import annotations

import functools
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock_script", REPO / "scripts" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


lock = _load_lock_module()
_problems = lock.problems


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """pyproject.toml and requirements/ of this checkout, to edit."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(REPO / "requirements", tmp_path / "requirements")
    return tmp_path


def test_the_committed_lock_matches_pyproject() -> None:
    assert lock.problems() == []


def test_a_requirement_added_without_relocking_is_reported(copy: Path) -> None:
    pyproject = copy / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(
        text.replace("dependencies = [\n", 'dependencies = [\n  "leftpad-nonexistent>=1.0",\n', 1)
    )
    found = lock.problems(copy)
    assert any("changed since the lock was generated" in p for p in found), found
    assert any("leftpad-nonexistent" in p and "not in the lock" in p for p in found), found


def test_a_range_the_pin_no_longer_satisfies_is_reported(copy: Path) -> None:
    pins = lock.pins(copy / "requirements" / "lock.txt")
    redis_version = pins["redis"][0]
    pyproject = copy / "pyproject.toml"
    text = pyproject.read_text()
    assert '"redis>=' in text
    start = text.index('"redis>=')
    end = text.index('"', start + 1)
    pyproject.write_text(text[:start] + f'"redis>{redis_version}' + text[end:])
    found = lock.problems(copy)
    assert any(p.startswith("redis>") and f"the lock pins {redis_version}" in p for p in found), found


def test_a_pin_without_a_hash_is_reported(copy: Path) -> None:
    path = copy / "requirements" / "lock.txt"
    lines = path.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("fastapi=="))
    kept = [lines[at].replace(" \\", "")] + [
        ln for ln in lines[at + 1 :] if not ln.strip().startswith("--hash")
    ]
    path.write_text("".join(lines[:at] + kept))
    assert "fastapi has no hash in requirements/lock.txt" in lock.problems(copy)


def test_the_docker_runtime_lock_must_be_a_subset_at_the_same_versions(copy: Path) -> None:
    path = copy / "requirements" / "runtime.txt"
    text = path.read_text()
    version = lock.pins(path)["httpx"][0]
    path.write_text(text.replace(f"httpx=={version}", "httpx==0.0.1", 1))
    found = lock.problems(copy)
    assert any(p.startswith("httpx==0.0.1 in requirements/runtime.txt") for p in found), found


def test_check_exits_1_with_the_reasons(
    copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (copy / "requirements" / "no-deps.txt").unlink()
    monkeypatch.setattr(lock, "problems", functools.partial(_problems, copy))
    assert lock.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "lock: requirements/no-deps.txt is missing" in err
    assert "run `make lock`" in err
