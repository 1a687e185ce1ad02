"""``ray job submit`` of the ingestion CLI to a real local Ray cluster (Ray Data engine).

Starts ``ray start --head`` (2 CPUs, its own temp dir and free ports) with ``RAY_AUTH_MODE=disabled``:
the cluster listens on 127.0.0.1 only and lives for this test, and the alternative — the generated token
in ``~/.ray/auth_token`` — is shared by every Ray process of the user on this machine. Real clusters keep
token auth on (see docs/PERFORMANCE.md, "Running on a cluster"). ``ray stop`` runs at the end whatever
happened.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import listen_port
from tests.integration.pipelines.test_ingest_pipeline import (
    RETURNS,
    SHIPPING,
    ingest_settings,
    make_brand,
    pg_chunk_count,
    stored_ids,
)

pytestmark = [pytest.mark.integration, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A head node on free ports; yields (job server address, environment for clients)."""
    port, dashboard = listen_port(), listen_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    temp = Path("/tmp") / f"rj{uuid.uuid4().hex[:6]}"  # short: Ray's socket paths have a length limit
    start = [
        str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2", "--disable-usage-stats",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--temp-dir={temp}", "--node-ip-address=127.0.0.1",
    ]  # fmt: skip
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=180)
    try:
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_runs_the_ingestion_cli(
    ray_cluster: tuple[str, dict[str, str]],
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    address, env = ray_cluster
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "shipping.md").write_text(SHIPPING)
    (kb / "returns.md").write_text(RETURNS)
    (kb / "broken.pdf").write_bytes(b"%PDF-1.7\nnot a pdf\n%%EOF")
    tenant_id, brand_id = make_brand(database_url)
    qdrant = tmp_path / "qdrant"
    job_env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "QDRANT__PATH": str(qdrant),
        "HF_HUB_OFFLINE": "1",
        "INGESTION__BATCH_SIZE": "2",
    }
    submit = [
        str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO),
        "--runtime-env-json", json.dumps({"env_vars": job_env}),
        "--", sys.executable, "-m", "pipelines.ingest", "--tenant", str(tenant_id), "--brand", str(brand_id),
        "--source", str(kb / "*"), "--engine", "ray", "--json",
    ]  # fmt: skip
    done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=540, cwd=REPO)

    lines = [line for line in done.stdout.splitlines() if line.startswith('{"documents_in"')]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(lines[-1])
    assert summary["documents_in"] == 3
    assert (summary["documents_indexed"], summary["documents_quarantined"]) == (2, 1)
    assert summary["quarantined"][0]["uri"].endswith("broken.pdf")
    settings = ingest_settings(database_url, redis_url, redis_prefix, qdrant)
    indexed = sum(
        len(stored_ids(settings, tenant_id, brand_id, str((kb / name).resolve())))
        for name in ("shipping.md", "returns.md")
    )
    assert indexed == summary["chunks_written"] == summary["chunks_total"] >= 3
    assert pg_chunk_count(database_url, brand_id) == indexed
