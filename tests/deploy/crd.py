"""Validate KubeRay custom resources against the CRDs' openAPIV3Schema, as an API server would.

The API server *prunes* unknown fields of a structural schema and rejects them under
``kubectl apply --validate=strict``; plain JSON Schema would let a typo such as ``workerGroupSpec``
through. :func:`strict_schema` closes every object that lists its properties (except where the CRD says
``x-kubernetes-preserve-unknown-fields``), so such a typo fails here like it fails with strict
validation (and kubeconform ``-strict`` in CI).
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO.parent / "shared" / "kuberay-crds"
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}


def strict_schema(node: Any) -> Any:
    """A copy of ``node`` with ``additionalProperties: false`` on every closed object."""
    if isinstance(node, dict):
        out = {k: strict_schema(v) for k, v in node.items()}
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict_schema(v) for v in node]
    return node


@cache
def crd_schema(kind: str, version: str = "v1") -> dict[str, Any]:
    """The strict openAPIV3Schema of ``kind`` at ``version``."""
    crd = yaml.safe_load((CRD_DIR / CRD_FILES[kind]).read_text())
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return strict_schema(copy.deepcopy(v["schema"]["openAPIV3Schema"]))  # type: ignore[no-any-return]
    raise KeyError(f"{kind} has no version {version}")


def validation_errors(manifest: dict[str, Any]) -> list[str]:
    """Every schema error of one ray.io manifest, as readable strings (empty when valid)."""
    group, _, version = manifest["apiVersion"].partition("/")
    assert group == "ray.io", manifest["apiVersion"]
    validator = jsonschema.Draft7Validator(crd_schema(manifest["kind"], version))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]
