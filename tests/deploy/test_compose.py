"""docker-compose.yml: valid against the Compose spec schema; healthchecks; no inline secrets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import REPO, run, tool

COMPOSE = REPO / "docker-compose.yml"
SECRET_KEY = re.compile(r"(PASSWORD|SECRET|API_KEY|ACCESS_KEY|_TOKEN)$")
REQUIRED_INTERPOLATION = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*:\?[^}]+\}$")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # type: ignore[no-any-return]


def test_valid_against_the_compose_spec_schema() -> None:
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = compose()
    broken["services"]["app"]["depends_on"]["postgres"]["condition"] = "service_ready"  # not a condition
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path))
    assert result.returncode != 0


def test_the_stack_and_its_healthchecks() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "qdrant", "minio", "app"}
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    app = services["app"]
    assert app["build"]["dockerfile"] == "docker/Dockerfile"
    assert {k: v["condition"] for k, v in app["depends_on"].items()} == {
        name: "service_healthy" for name in ("postgres", "redis", "qdrant", "minio")
    }
    assert app["env_file"][0]["path"] == ".env"
    assert int(app["shm_size"].rstrip("gb")) >= 1, "Ray's object store needs /dev/shm"


def test_images_are_pinned() -> None:
    for name, svc in compose()["services"].items():
        if "image" in svc and "build" not in svc:
            repo, _, tag = svc["image"].rpartition(":")
            assert repo and tag and tag != "latest", f"{name}: {svc['image']}"


@pytest.mark.parametrize("service", ["postgres", "minio", "app"])
def test_no_inline_secret(service: str) -> None:
    env = compose()["services"][service].get("environment", {})
    for key, value in env.items():
        if SECRET_KEY.search(key):
            assert REQUIRED_INTERPOLATION.match(str(value)), f"{service}.{key} must come from .env"
    # Connection URLs carry no password either.
    for key, value in env.items():
        assert not re.search(r"://[^/@]*:[^/@]+@", str(value)), f"{service}.{key} embeds a password"
