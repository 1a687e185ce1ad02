"""The in-cluster vLLM config validates through Ray's own models; the Serve configs validate too."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from common.config import Settings, VLLMSettings
from serve_apps.llm_vllm import OPENAI_APP_IMPORT_PATH, build_llm_config, build_serve_app_config
from tests.deploy.tools import REPO

LLMConfig = pytest.importorskip("ray.llm._internal.serve.core.configs.llm_config").LLMConfig
ServeDeploySchema = pytest.importorskip("ray.serve.schema").ServeDeploySchema

SERVE_CONFIGS = [
    REPO / "serve_apps" / "serve_config.yaml",
    *sorted((REPO / "cluster" / "serve").glob("*.yaml")),
]


def settings(**vllm: Any) -> Settings:
    return Settings(_env_file=None, vllm=VLLMSettings(**vllm))  # type: ignore[call-arg]


def test_default_config_validates_and_carries_the_settings() -> None:
    config = build_llm_config(settings(tensor_parallel_size=2, max_replicas=4, accelerator_type="H100"))
    parsed = LLMConfig.model_validate(config)
    assert parsed.accelerator_type == "H100"
    assert config["engine_kwargs"]["tensor_parallel_size"] == 2
    assert config["deployment_config"]["autoscaling_config"]["max_replicas"] == 4


def test_min_above_max_replicas_is_rejected_by_settings_and_by_ray() -> None:
    with pytest.raises(ValueError, match="min_replicas"):
        build_llm_config(settings(min_replicas=3, max_replicas=2))
    raw = copy.deepcopy(build_llm_config(settings()))
    raw["deployment_config"]["autoscaling_config"]["min_replicas"] = 5
    with pytest.raises(ValidationError):
        LLMConfig.model_validate(raw)


def test_unknown_accelerator_is_rejected() -> None:
    with pytest.raises(ValidationError, match="accelerator"):
        build_llm_config(settings(accelerator_type="NOT-A-GPU"))


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_serve_config_files_validate(path: Any) -> None:
    ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))


def test_llm_vllm_yaml_is_what_the_builder_makes() -> None:
    """cluster/serve/llm-vllm.yaml is generated from the settings; drift fails here."""
    config = yaml.safe_load((REPO / "cluster" / "serve" / "llm-vllm.yaml").read_text())
    (app,) = config["applications"]
    assert app == build_serve_app_config(settings(accelerator_type="L4"))
    assert app["import_path"] == OPENAI_APP_IMPORT_PATH


def test_helm_default_llm_config_is_what_the_builder_makes() -> None:
    values = yaml.safe_load((REPO / "cluster" / "helm" / "assistant" / "values.yaml").read_text())
    assert values["llm"]["config"] == build_llm_config(settings(accelerator_type="L4"))


def test_duplicate_application_names_are_rejected() -> None:
    config = yaml.safe_load(SERVE_CONFIGS[0].read_text())
    config["applications"].append(copy.deepcopy(config["applications"][0]))
    with pytest.raises(ValidationError):
        ServeDeploySchema.model_validate(config)
