"""GPU smoke test of the in-cluster model: ``make gpu-smoke`` (or ``python scripts/gpu_smoke.py``).

For a machine with a GPU and the ``gpu`` extra installed (``docker/Dockerfile.gpu``). Starts a local Ray,
runs the vLLM OpenAI app built by ``serve_apps.llm_vllm.build_vllm_app`` through ``serve.run`` with the
settings from the environment (``VLLM__MODEL_SOURCE``, ``VLLM__MAX_MODEL_LEN``, ...; a small model such
as ``Qwen/Qwen2.5-0.5B-Instruct`` keeps it to a few minutes), sends one chat completion through the
OpenAI-compatible HTTP route, checks that it answered, and prints one JSON line: startup seconds,
completion latency, tokens and the text. Exit 1 when the answer is empty or slower than ``--max-latency-s``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import httpx


def _settings(args: argparse.Namespace) -> Any:
    from common.config import Settings, VLLMSettings

    base = Settings()
    # One replica, no autoscaling surprises: this measures one model on one machine.
    updates: dict[str, Any] = {"min_replicas": 1, "max_replicas": 1}
    if args.model_source:
        updates |= {"model_source": args.model_source, "model_id": args.model_id}
    vllm = VLLMSettings.model_validate({**base.vllm.model_dump(), **updates})
    return base.model_copy(update={"vllm": vllm})


def main(argv: list[str] | None = None) -> int:
    """Start the app, ask one question, print the measurements; 0 when it answered in time."""
    parser = argparse.ArgumentParser(prog="scripts/gpu_smoke.py", description=__doc__)
    parser.add_argument("--model-source", default=None, help="override VLLM__MODEL_SOURCE")
    parser.add_argument("--model-id", default="smoke-model", help="model id used with --model-source")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-latency-s", type=float, default=30.0)
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    from serve_apps.llm_vllm import build_vllm_app

    settings = _settings(args)
    started = time.monotonic()
    ray.init()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        serve.run(build_vllm_app(settings), name="llm", route_prefix=settings.vllm.route_prefix)
        startup_s = time.monotonic() - started
        url = f"http://127.0.0.1:{args.port}{settings.vllm.route_prefix}/v1/chat/completions"
        body = {
            "model": settings.vllm.model_id,
            "messages": [{"role": "user", "content": "In one sentence: what is a return policy?"}],
            "max_tokens": 64,
            "temperature": 0.0,
        }
        t0 = time.monotonic()
        resp = httpx.post(url, json=body, timeout=300)
        latency_s = time.monotonic() - t0
        resp.raise_for_status()
        data = resp.json()
        text = data["choices"][0]["message"]["content"] or ""
        result = {
            "ok": bool(text.strip()) and latency_s <= args.max_latency_s,
            "model_source": settings.vllm.model_source,
            "startup_s": round(startup_s, 1),
            "latency_s": round(latency_s, 3),
            "completion_tokens": data.get("usage", {}).get("completion_tokens"),
            "text": text,
        }
        sys.stdout.write(json.dumps(result) + "\n")
        return 0 if result["ok"] else 1
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
