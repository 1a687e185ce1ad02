"""The in-cluster vLLM model served by Ray Serve LLM (GPU worker nodes).

``build_llm_config(settings)`` turns :class:`common.config.VLLMSettings` into the ``llm_configs`` entry
of ``ray.serve.llm.build_openai_app`` and validates it with Ray's own ``LLMConfig`` model, which
imports without vLLM (``ray.serve.llm`` itself refuses to import where vLLM is absent, as on CPU-only
machines and in CI). ``build_vllm_app(settings)`` imports ``ray.serve.llm`` lazily, so it works only
on an image with the ``gpu`` extra (``docker/Dockerfile.gpu``).

The assistant's own ``llm`` deployment reaches this app over HTTP like any OpenAI-compatible server:
``LLM_PROVIDER=vllm`` and ``LLM_BASE_URL=http://<serve service>:8000<route_prefix>/v1`` (see
``common/llm/factory.py``). ``cluster/serve/llm-vllm.yaml`` is the same configuration as a Serve
config file, for ``serve deploy`` and the RayService.
"""

from __future__ import annotations

from typing import Any

from common.config import Settings, VLLMSettings

#: Importable name of Ray's OpenAI app builder, used in Serve config files.
OPENAI_APP_IMPORT_PATH = "ray.serve.llm:build_openai_app"


def _engine_kwargs(vllm: VLLMSettings) -> dict[str, Any]:
    return {
        "tensor_parallel_size": vllm.tensor_parallel_size,
        "max_model_len": vllm.max_model_len,
        "gpu_memory_utilization": vllm.gpu_memory_utilization,
        # Prefix caching pays off here: every request of a brand starts with the same persona prompt.
        "enable_prefix_caching": True,
    }


def _deployment_config(vllm: VLLMSettings) -> dict[str, Any]:
    return {
        "max_ongoing_requests": vllm.max_ongoing_requests,
        "autoscaling_config": {
            "min_replicas": vllm.min_replicas,
            "initial_replicas": max(vllm.min_replicas, 1),
            "max_replicas": vllm.max_replicas,
            "target_ongoing_requests": vllm.target_ongoing_requests,
            # Scale up fast (users are waiting), down slowly (a GPU replica takes minutes to load).
            "upscale_delay_s": 30,
            "downscale_delay_s": 600,
        },
    }


def build_llm_config(settings: Settings) -> dict[str, Any]:
    """The validated ``LLMConfig`` for the in-cluster model, as a plain dict (Serve config YAML shape).

    Raises ``pydantic.ValidationError`` (from Ray's ``LLMConfig``) or ``ValueError`` for a config a
    cluster would reject, e.g. ``min_replicas > max_replicas``.
    """
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig

    vllm = settings.vllm
    if vllm.min_replicas > vllm.max_replicas:
        raise ValueError(f"vllm.min_replicas ({vllm.min_replicas}) > vllm.max_replicas ({vllm.max_replicas})")
    raw: dict[str, Any] = {
        "model_loading_config": {"model_id": vllm.model_id, "model_source": vllm.model_source},
        "llm_engine": "vLLM",
        "engine_kwargs": _engine_kwargs(vllm),
        "deployment_config": _deployment_config(vllm),
    }
    if vllm.accelerator_type:
        raw["accelerator_type"] = vllm.accelerator_type
    LLMConfig.model_validate(raw)
    return raw


def build_serve_app_config(settings: Settings) -> dict[str, Any]:
    """One Serve config ``applications`` entry running the OpenAI-compatible vLLM app."""
    return {
        "name": "llm",
        "route_prefix": settings.vllm.route_prefix,
        "import_path": OPENAI_APP_IMPORT_PATH,
        "args": {"llm_configs": [build_llm_config(settings)]},
    }


def build_vllm_app(settings: Settings) -> Any:
    """The Ray Serve LLM OpenAI app; only where vLLM is installed (the ``gpu`` extra)."""
    from ray.serve.llm import LLMConfig, build_openai_app

    return build_openai_app({"llm_configs": [LLMConfig(**build_llm_config(settings))]})
