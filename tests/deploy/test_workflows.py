"""GitHub workflows: valid against the workflow schema (vendored by check-jsonschema) and complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import REPO, run, tool

WORKFLOWS = REPO / ".github" / "workflows"


def load(name: str) -> dict[Any, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())  # type: ignore[no-any-return]


def steps_text(workflow: dict[Any, Any]) -> str:
    """Every step's `uses` and `run`, one per line (what the jobs actually execute)."""
    steps = [step for job in workflow["jobs"].values() for step in job.get("steps", [])]
    return "\n".join(str(step.get("uses", "")) + "\n" + str(step.get("run", "")) for step in steps)


@pytest.mark.parametrize("name", ["ci.yml", "cd.yml", "latest.yml"])
def test_valid_against_the_github_workflow_schema(name: str) -> None:
    result = run(
        tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOWS / name)
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_job_without_runs_on(tmp_path: Path) -> None:
    text = (WORKFLOWS / "ci.yml").read_text().replace("    runs-on: ubuntu-24.04\n", "", 1)
    path = tmp_path / "ci.yml"
    path.write_text(text)
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path))
    assert result.returncode != 0


def test_ci_covers_lint_types_tests_images_scan_chart_and_crds() -> None:
    text = steps_text(load("ci.yml"))
    for needle in (
        "make lint",
        "make typecheck",
        "make test",
        "docker/build-push-action@",
        "aquasecurity/trivy-action@",
        "helm lint",
        "helm template",
        "kubeconform -strict",
        "ray-operator/config/crd/bases",
    ):
        assert needle in text, needle


def test_cd_pushes_on_tags_then_staging_smoke_then_approved_prod() -> None:
    cd = load("cd.yml")
    trigger = cd.get("on") or cd[True]  # YAML 1.1 reads the bare key `on` as a boolean
    assert trigger["push"]["tags"]
    jobs = cd["jobs"]
    assert jobs["images"]["permissions"]["packages"] == "write"
    build = next(
        s for s in jobs["images"]["steps"] if s.get("uses", "").startswith("docker/build-push-action")
    )
    assert build["with"]["push"] is True
    assert jobs["staging"]["needs"] == "images"
    assert jobs["production"]["needs"] == "staging"
    assert jobs["production"]["environment"]["name"] == "production"
    for env in ("staging", "production"):
        text = steps_text({"jobs": {env: jobs[env]}})
        assert "helm upgrade --install" in text
        assert "scripts/smoke.py" in text


def test_the_gate_installs_the_lock_and_a_scheduled_job_tries_the_newest_versions() -> None:
    assert "make test" in steps_text(load("ci.yml"))
    assert "test-latest" not in steps_text(load("ci.yml"))  # drift never turns the gate red
    latest = load("latest.yml")
    trigger = latest.get("on") or latest[True]  # YAML 1.1 reads the bare key `on` as a boolean
    assert trigger["schedule"] and "workflow_dispatch" in trigger
    assert "make test-latest" in steps_text(latest)
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes" in makefile and "requirements/lock.txt" in makefile
