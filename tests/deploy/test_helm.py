"""Helm chart: values (merged like Helm merges them) validate against values.schema.json; the Serve
config the chart builds from them validates through Ray; templates keep their structural promises.

There is no helm binary here and a Go-template renderer is not worth writing: CI runs
`helm lint --strict` and `helm template | kubeconform -strict` against the KubeRay CRD schemas
(.github/workflows/ci.yml).
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.tools import REPO

CHART = REPO / "cluster" / "helm" / "assistant"
TEMPLATES = CHART / "templates"
OVERLAYS = ["values-staging.yaml", "values-prod.yaml"]


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / name).read_text())  # type: ignore[no-any-return]


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing: maps merge key by key, everything else (lists too) is replaced."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def values_for(overlay: str | None) -> dict[str, Any]:
    base = load("values.yaml")
    return merge(base, load(overlay)) if overlay else base


def schema_errors(values: dict[str, Any]) -> list[str]:
    schema = json.loads((CHART / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]


@pytest.mark.parametrize("overlay", [None, *OVERLAYS])
def test_values_validate_against_the_schema(overlay: str | None) -> None:
    assert schema_errors(values_for(overlay)) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda v: v["settings"].update(PGPASSWORD="hunter2"), "PGPASSWORD"),
        (lambda v: v["settings"].update(CHANNELS__META_APP_SECRET="x"), "META_APP_SECRET"),
        (
            lambda v: v["serve"]["endpoints"].update(database_url="postgresql+psycopg://u:pw@db/assistant"),
            "database_url",
        ),
        (lambda v: v["image"].update(tag="latest"), "image/tag"),
        (lambda v: v.update(llmm={}), "llmm"),
        (lambda v: v["ingestJob"].update(enabled=True, tenant="acme", brand="b", source="/tmp"), "ingestJob"),
    ],
    ids=["secret-in-settings", "channel-secret", "password-in-url", "latest-tag", "typo", "bad-ingest"],
)
def test_schema_rejects_bad_values(mutate: Any, expected: str) -> None:
    values = values_for(None)
    mutate(values)
    errors = schema_errors(values)
    assert errors and any(expected in e for e in errors), errors


def serve_config(values: dict[str, Any]) -> dict[str, Any]:
    """What the `assistant.serveConfig` helper in _helpers.tpl builds from the values."""
    apps: list[dict[str, Any]] = [
        {
            "name": "assistant",
            "route_prefix": "/",
            "import_path": "serve_apps.app_builder:app_builder",
            "args": {"endpoints": values["serve"]["endpoints"], **values["serve"]["replicas"]},
        }
    ]
    if values["llm"]["enabled"]:
        apps.append(
            {
                "name": "llm",
                "route_prefix": values["llm"]["routePrefix"],
                "import_path": "ray.serve.llm:build_openai_app",
                "args": {"llm_configs": [values["llm"]["config"]]},
            }
        )
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": 8000},
        "applications": apps,
    }


def test_helper_builds_the_serve_config_this_test_mirrors() -> None:
    helper = (TEMPLATES / "_helpers.tpl").read_text()
    block = helper[helper.index('define "assistant.serveConfig"') :]
    for needle in (
        "proxy_location: EveryNode",
        "import_path: serve_apps.app_builder:app_builder",
        "import_path: ray.serve.llm:build_openai_app",
        "toYaml .Values.serve.endpoints",
        "toYaml .Values.serve.replicas",
        "toYaml .Values.llm.config",
        "route_prefix: {{ .Values.llm.routePrefix }}",
    ):
        assert needle in block, needle


@pytest.mark.parametrize("overlay", [None, *OVERLAYS])
def test_chart_serve_config_validates_through_ray(overlay: str | None) -> None:
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig
    from ray.serve.schema import ServeDeploySchema

    from serve_apps.app_builder import AppArgs

    values = values_for(overlay)
    config = serve_config(values)
    ServeDeploySchema.model_validate(config)
    AppArgs.model_validate(config["applications"][0]["args"])
    LLMConfig.model_validate(values["llm"]["config"])


@pytest.mark.parametrize("overlay", [None, *OVERLAYS])
def test_gpu_workers_can_hold_every_vllm_replica(overlay: str | None) -> None:
    values = values_for(overlay)
    llm = values["llm"]["config"]
    needed = (
        llm["deployment_config"]["autoscaling_config"]["max_replicas"]
        * llm["engine_kwargs"]["tensor_parallel_size"]
    )
    gpu = values["ray"]["gpuWorkers"]
    assert gpu["maxReplicas"] * gpu["gpusPerPod"] >= needed


def test_bad_llm_overlay_is_rejected_by_ray() -> None:
    from pydantic import ValidationError
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig

    values = values_for("values-prod.yaml")
    values["llm"]["config"]["deployment_config"]["autoscaling_config"]["min_replicas"] = 10
    with pytest.raises(ValidationError):
        LLMConfig.model_validate(values["llm"]["config"])


def test_chart_version_matches_the_project() -> None:
    chart = load("Chart.yaml")
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == version
    values = load("values.yaml")
    assert values["image"]["tag"] == values["gpuImage"]["tag"] == version


def template_kinds() -> dict[str, set[str]]:
    kinds: dict[str, set[str]] = {}
    for path in TEMPLATES.glob("*.yaml"):
        kinds[path.name] = set(re.findall(r"^kind: (\w+)$", path.read_text(), flags=re.M))
    return kinds


def test_templates_cover_the_deliverables() -> None:
    assert template_kinds() == {
        "rayservice.yaml": {"RayService"},
        "rayjob-ingest.yaml": {"RayJob"},
        "configmap.yaml": {"ConfigMap"},
        "externalsecret.yaml": {"ExternalSecret"},
        "ingress.yaml": {"Ingress"},
        "servicemonitor.yaml": {"Service", "ServiceMonitor"},
    }


def test_no_template_carries_secret_material() -> None:
    for path in TEMPLATES.glob("*"):
        text = path.read_text()
        assert "kind: Secret" not in text, path.name
        assert "stringData" not in text, path.name
        assert ".Values.secrets." not in text or path.name in {"_helpers.tpl", "externalsecret.yaml"}, (
            path.name
        )
    helper = (TEMPLATES / "_helpers.tpl").read_text()
    assert 'fail "set secrets.existingSecret or secrets.externalSecret.enabled' in helper


def test_rayservice_template_shape() -> None:
    text = (TEMPLATES / "rayservice.yaml").read_text()
    for needle in (
        "apiVersion: ray.io/v1",
        'include "assistant.serveConfig"',
        "enableInTreeAutoscaling: true",
        "groupName: cpu",
        "groupName: gpu",
        "nvidia.com/gpu: {{ .Values.ray.gpuWorkers.gpusPerPod }}",
        'include "assistant.envFrom"',
        'include "assistant.podSecurityContext"',
    ):
        assert needle in text, needle


@pytest.mark.parametrize("template", sorted(p.name for p in TEMPLATES.glob("*")))
def test_every_values_reference_exists(template: str) -> None:
    text = (TEMPLATES / template).read_text()
    values = values_for(None)
    for ref in set(re.findall(r"\.Values\.([\w.]+)", text)):
        node: Any = values
        for part in ref.split("."):
            assert isinstance(node, dict) and part in node, f"{template}: .Values.{ref} missing"
            node = node[part]


def test_ingress_routes_webhooks_to_the_serve_service() -> None:
    text = (TEMPLATES / "ingress.yaml").read_text()
    assert "-serve-svc" in text and "number: 8000" in text
    assert "/webhooks" in load("values.yaml")["ingress"]["paths"]


def test_every_chart_file_is_valid_yaml_outside_templates() -> None:
    for path in [*CHART.glob("*.yaml"), CHART / "values.schema.json"]:
        assert yaml.safe_load(Path(path).read_text()) is not None, path.name


def test_cluster_pods_get_the_serve_settings_the_launcher_uses() -> None:
    from deployments.replica import SERVE_LATENCY_ENV

    settings = load("values.yaml")["settings"]
    assert {k: settings.get(k) for k in SERVE_LATENCY_ENV} == SERVE_LATENCY_ENV
