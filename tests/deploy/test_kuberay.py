"""KubeRay manifests: valid against the CRD schemas and consistent with the Serve configs."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.crd import CRD_DIR, REPO, validation_errors

KUBERAY = REPO / "cluster" / "kuberay"
MANIFESTS = sorted(KUBERAY.glob("*.yaml"))

# The CRD schemas ship beside the repository (../shared/kuberay-crds); CI always has them, so there a
# missing directory is a failure, not a skip. A bare clone elsewhere skips with the reason.
if not CRD_DIR.is_dir() and os.environ.get("CI"):
    raise RuntimeError(f"KubeRay CRDs not found at {CRD_DIR}: CI must validate the manifests")
pytestmark = pytest.mark.skipif(not CRD_DIR.is_dir(), reason=f"KubeRay CRDs not found at {CRD_DIR}")


def load(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 1, path
    return docs[0]  # type: ignore[no-any-return]


def test_every_kind_has_a_manifest() -> None:
    kinds = sorted(load(p)["kind"] for p in MANIFESTS)
    assert kinds == ["RayCluster", "RayJob", "RayService"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_against_its_crd(path: Path) -> None:
    assert validation_errors(load(path)) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        # a typo'd field name: pruned silently by a lenient server, rejected by strict validation
        (lambda m: m["spec"]["rayClusterConfig"].update(workerGroupSpec=[]), "workerGroupSpec"),
        # a worker group without its required groupName
        (lambda m: m["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].pop("groupName"), "groupName"),
        # serveConfigV2 must be a string (a YAML document), not a mapping
        (lambda m: m["spec"].update(serveConfigV2={"applications": []}), "serveConfigV2"),
        # an auth mode the operator does not know
        (lambda m: m["spec"]["rayClusterConfig"].update(authOptions={"mode": "password"}), "password"),
    ],
    ids=["unknown-field", "missing-groupName", "serveConfigV2-not-string", "bad-auth-mode"],
)
def test_broken_rayservice_is_rejected(mutate: Any, expected: str) -> None:
    manifest = copy.deepcopy(load(KUBERAY / "rayservice.yaml"))
    mutate(manifest)
    errors = validation_errors(manifest)
    assert errors, "a broken manifest validated"
    assert any(expected in e for e in errors), errors


def rayservice() -> dict[str, Any]:
    return load(KUBERAY / "rayservice.yaml")


def serve_apps_by_name(config: dict[str, Any]) -> dict[str, Any]:
    return {app["name"]: app for app in config["applications"]}


def test_serve_config_v2_is_the_repo_serve_configs() -> None:
    """The RayService runs exactly serve_apps/serve_config.yaml's app plus cluster/serve/llm-vllm.yaml's."""
    v2 = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])
    assistant = yaml.safe_load((REPO / "serve_apps" / "serve_config.yaml").read_text())
    llm = yaml.safe_load((REPO / "cluster" / "serve" / "llm-vllm.yaml").read_text())
    apps = serve_apps_by_name(v2)
    assert apps == {**serve_apps_by_name(assistant), **serve_apps_by_name(llm)}
    assert v2["http_options"] == assistant["http_options"] == llm["http_options"]


def test_serve_config_v2_validates_through_ray() -> None:
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(yaml.safe_load(rayservice()["spec"]["serveConfigV2"]))


def test_cluster_shape_for_serving() -> None:
    cluster = rayservice()["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] >= 1
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    # The GPU group can hold every vLLM replica the Serve autoscaler may ask for.
    v2 = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])
    llm_config = serve_apps_by_name(v2)["llm"]["args"]["llm_configs"][0]
    autoscaling = llm_config["deployment_config"]["autoscaling_config"]
    gpus_needed = autoscaling["max_replicas"] * llm_config["engine_kwargs"]["tensor_parallel_size"]
    assert groups["gpu"]["maxReplicas"] * gpu_limits["nvidia.com/gpu"] >= gpus_needed


def test_rayjob_runs_the_ingestion_pipeline() -> None:
    job = load(KUBERAY / "rayjob-ingest.yaml")
    argv = job["spec"]["entrypoint"].split()
    assert argv[:3] == ["python", "-m", "pipelines.ingest"]
    for flag in ("--tenant", "--brand", "--source"):
        assert flag in argv
    assert argv[argv.index("--source") + 1].startswith("s3://")
    assert job["spec"]["shutdownAfterJobFinishes"] is True


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_pods_run_as_non_root_with_the_project_images(path: Path) -> None:
    spec = load(path)["spec"]
    cluster = spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec
    assert cluster["rayVersion"] == "2.60.0"
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        pod = group["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["image"].split(":")[0].startswith("ghcr.io/"), container["image"]
            assert not container["image"].endswith(":latest")
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
