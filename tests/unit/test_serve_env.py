"""The launcher starts a local Ray with Serve's one-loop request path unless the operator chose."""

from __future__ import annotations

from common.config import Settings
from deployments.replica import SERVE_LATENCY_ENV
from serve_apps.launcher import use_serve_latency_env


def _settings(address: str | None = None) -> Settings:
    base = Settings()
    return base.model_copy(update={"ray": base.ray.model_copy(update={"address": address})})


def test_a_local_ray_gets_the_serve_latency_settings() -> None:
    environ: dict[str, str] = {}
    use_serve_latency_env(_settings(), environ)
    assert environ == SERVE_LATENCY_ENV
    assert environ["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "0"


def test_an_operator_value_wins() -> None:
    environ = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1"}
    use_serve_latency_env(_settings(), environ)
    assert environ["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "1"
    assert environ["RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP"] == "0"


def test_a_cluster_address_leaves_the_environment_alone() -> None:
    environ: dict[str, str] = {}
    use_serve_latency_env(_settings("ray://head:10001"), environ)
    assert environ == {}
