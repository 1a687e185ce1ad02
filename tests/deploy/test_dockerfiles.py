"""Dockerfiles: hadolint-clean, pinned official Ray base, non-root, CPU torch pinned, no secrets."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.deploy.tools import REPO, run, tool

DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.gpu"]
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|API_KEY|ACCESS_KEY|_TOKEN)\b")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        buf += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def args_of(path: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for kind, a in instructions(path) if kind == "ARG" and "=" in a)


def project() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(path: Path) -> None:
    result = run(tool("hadolint"), "--no-color", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nCMD python app.py\n")
    result = run(tool("hadolint"), "--no-color", str(bad))
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_is_the_official_ray_image_at_the_project_ray_version(path: Path) -> None:
    ray_pin = next(d for d in project()["dependencies"] if d.startswith("ray["))  # type: ignore[attr-defined]
    major_minor = re.search(r"==(\d+\.\d+)", ray_pin).group(1)  # type: ignore[union-attr]
    ray_version = args_of(path)["RAY_VERSION"]
    assert re.fullmatch(rf"{re.escape(major_minor)}\.\d+", ray_version), (ray_version, ray_pin)
    flavour = "gpu" if path.name.endswith(".gpu") else "cpu"
    froms = [a for kind, a in instructions(path) if kind == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    for base in froms:
        assert base.startswith(f"rayproject/ray:${{RAY_VERSION}}-${{PYTHON_TAG}}-{flavour} "), base


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_runtime_stage_runs_as_a_numeric_non_root_user(path: Path) -> None:
    steps = instructions(path)
    last_from = max(i for i, (kind, _) in enumerate(steps) if kind == "FROM")
    users = [a for kind, a in steps[last_from:] if kind == "USER"]
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_app_version_matches_pyproject(path: Path) -> None:
    assert args_of(path)["APP_VERSION"] == project()["version"]


def test_cpu_image_installs_the_hashed_runtime_lock_with_cpu_torch_before_the_project() -> None:
    path = DOCKERFILES[0]
    lock_torch = re.search(r"^torch==([\d.]+)", (REPO / "requirements" / "lock.in").read_text(), re.M)
    assert lock_torch is not None
    runtime = (REPO / "requirements" / "runtime.txt").read_text()
    assert f"torch=={lock_torch.group(1)}+cpu " in runtime  # the CPU build, not the CUDA one
    runs = [a for kind, a in instructions(path) if kind == "RUN"]
    fetch = next(i for i, r in enumerate(runs) if "runtime.txt" in r)
    assert "download.pytorch.org/whl/cpu" in runs[fetch]
    assert "--require-hashes" in runs[fetch]
    install = next(i for i, r in enumerate(runs) if "enterprise-messaging-assistant==" in r)
    assert fetch < install
    assert "--require-hashes" in runs[install] and "runtime.txt" in runs[install]
    assert "--no-deps" in runs[install]  # nothing resolved at build time: the lock is the set


def test_gpu_image_installs_the_gpu_extra() -> None:
    runs = " ".join(a for kind, a in instructions(DOCKERFILES[1]) if kind == "RUN")
    assert "[gpu]" in runs
    assert "download.pytorch.org/whl/cpu" not in runs  # vLLM brings its CUDA torch


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_secret_in_arg_or_env(path: Path) -> None:
    for kind, a in instructions(path):
        if kind in {"ARG", "ENV"}:
            assert not SECRET_NAME.search(a), f"{kind} {a}"


def test_dockerignore_keeps_secrets_out_and_lets_every_copy_source_in() -> None:
    lines = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "**", "deny-all first, then allow-list"
    assert "**/.env" in lines
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for path in DOCKERFILES:
        for kind, a in instructions(path):
            if kind != "COPY" or "--from=" in a:
                continue
            sources = [s for s in a.split() if not s.startswith("--")][:-1]
            for src in sources:
                allowed_dir = any(src.startswith(d + "/") for d in allowed)
                assert src.rstrip("/") in allowed or allowed_dir, f"{path.name}: COPY {src} is excluded"
                assert (REPO / src).exists(), f"{path.name}: COPY {src} does not exist"
